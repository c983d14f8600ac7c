import Datasets
import Engine
import Foundation
import Llama

/// Passkey retrieval (Mohtashami & Jaggi's landmark-attention test, as LongLoRA runs it): a
/// random five-digit key hidden at some depth of filler text, asked for at the end.
///
/// The prompt is the task description, filler, the key line, more filler, and the question; the
/// answer is the key's tokens. A trial counts as retrieved when greedy decoding would produce the
/// answer exactly, which is checked in one forward pass over prompt + answer: greedy decoding emits
/// the answer iff at every answer position the most likely next token is the answer's own token
/// (given the answer's earlier tokens, which greedy decoding would have emitted).
public struct PasskeyTrial: Codable, Equatable, Sendable {
    public let context: Int
    public let depth: Double          // where the key line sits: 0 = right after the task description,
                                      // 1 = just before the question
    public let passkey: Int
    public let retrieved: Bool
    public let predicted: String      // what greedy decoding would print in place of the answer
                                      // (first token that differs and before)
    public let answerLogProb: Double  // log p(answer | prompt)
}

public struct PasskeyResult: Codable, Equatable, Sendable {
    /// Trials at one depth of the key.
    public struct Depth: Codable, Equatable, Sendable {
        public let depth: Double
        public let trials: Int
        public let retrieved: Int
    }

    public let context: Int
    public let accuracy: Double       // fraction of trials retrieved
    public let depths: [Depth]        // the trials grouped by depth, shallowest first (the passkey map's cells)
    public let trials: [PasskeyTrial]

    public init(context: Int, trials: [PasskeyTrial]) {
        self.context = context
        self.trials = trials
        accuracy = Double(trials.filter(\.retrieved).count) / Double(max(trials.count, 1))
        depths = Set(trials.map(\.depth)).sorted().map { d in
            let at = trials.filter { $0.depth == d }
            return Depth(depth: d, trials: at.count, retrieved: at.filter(\.retrieved).count)
        }
    }
}

public enum Passkey {
    static let task = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        + "I will quiz you about the important information there."
    static let filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    static func keyLine(_ key: Int) -> String { " The pass key is \(key). Remember it. \(key) is the pass key." }
    static let question = " What is the pass key? The pass key is"

    public struct Prompt: Equatable {
        public let ids: [Int32]        // prompt followed by the answer; at most the requested length
        public let answerStart: Int    // index of the answer's first token in `ids`
        public let passkey: Int
    }

    /// The longest prompt of whole filler sentences (split between before and after the key line
    /// at `depth`) whose tokens, answer included, fit in `length`.
    public static func prompt(tokenizer: Tokenizer, length: Int, passkey: Int, depth: Double) throws -> Prompt {
        func text(_ units: Int) -> (prompt: String, full: String) {
            let before = Int((Double(units) * depth).rounded())
            let p = task + String(repeating: filler, count: before) + keyLine(passkey)
                + String(repeating: filler, count: units - before) + question
            return (p, p + " \(passkey)")
        }
        let fixed = tokenizer.encode(text(0).full).count
        guard fixed <= length else {
            throw LongTuneError("passkey: context \(length) is shorter than the bare prompt (\(fixed) tokens); "
                                + "use at least \(fixed)")
        }
        let perUnit = max(1, tokenizer.encode(String(repeating: filler, count: 16)).count / 16)
        var units = (length - fixed) / perUnit + 1
        while true {   // the estimate may overshoot by a few tokens at the joins
            let (p, full) = text(units)
            let ids = tokenizer.encode(full)
            if ids.count <= length || units == 0 {
                let promptIds = tokenizer.encode(p)
                guard ids.count > promptIds.count, Array(ids.prefix(promptIds.count)) == promptIds else {
                    throw LongTuneError("passkey: the tokenizer merges the answer into the question's last token; "
                                        + "cannot score it")
                }
                return Prompt(ids: ids, answerStart: promptIds.count, passkey: passkey)
            }
            units -= 1
        }
    }

    /// Greedy check of the answer ids[answerStart...]: for each answer position, the argmax of the
    /// next-token logits at the position before it. Returns the argmax tokens and log p(answer).
    public static func score(model: LlamaForCausalLM, ids: [Int32],
                             answerStart: Int) throws -> (argmax: [Int32], logProb: Double) {
        precondition(answerStart >= 1 && answerStart < ids.count, "passkey: the answer must follow a non-empty prompt")
        try model.checkTokens(ids)
        let h = model.hiddenStates(Graph(recording: false), ids: ids,
                                   context: try model.context(length: ids.count)).value
        let c = model.config.hiddenSize, v = model.config.vocabSize
        let rows = ids.count - answerStart   // positions answerStart−1 … count−2 predict the answer
        let logits = Tensor(uninitialized: [rows, v])
        model.headWeight.logits(h.data + (answerStart - 1) * c, rows: rows, into: logits.data)
        var argmax: [Int32] = [], logProb = 0.0
        for r in 0..<rows {
            let z = logits.data + r * v
            var best = 0
            for j in 1..<v where z[j] > z[best] { best = j }
            argmax.append(Int32(best))
            logProb -= LMHeadLoss.nll(logits: z, vocab: v, target: Int(ids[answerStart + r]))
        }
        return (argmax, logProb)
    }

    /// `trials` keys per context length, at depths spread evenly from 0 to 1 (one trial: depth 0.5);
    /// keys drawn from 10000…99999 with `seed`.
    public static func evaluate(model: LlamaForCausalLM, tokenizer: Tokenizer, contexts: [Int], trials: Int,
                                seed: UInt64 = 1, progress: ((String) -> Void)? = nil) throws -> [PasskeyResult] {
        guard trials >= 1 else { throw LongTuneError("--trials must be at least 1, got \(trials)") }
        var rng = SplitMix64(seed: seed)
        var results: [PasskeyResult] = []
        for length in contexts {
            var out: [PasskeyTrial] = []
            for t in 0..<trials {
                let depth = trials == 1 ? 0.5 : Double(t) / Double(trials - 1)
                let key = 10000 + Int(rng.next() % 90000)
                let p = try prompt(tokenizer: tokenizer, length: length, passkey: key, depth: depth)
                let t0 = Date()
                let (argmax, logProb) = try score(model: model, ids: p.ids, answerStart: p.answerStart)
                let answer = Array(p.ids[p.answerStart...])
                let firstWrong = answer.indices.first { argmax[$0] != answer[$0] }
                let shown = firstWrong.map { Array(argmax.prefix($0 + 1)) } ?? argmax
                let trial = PasskeyTrial(context: length, depth: depth, passkey: key, retrieved: firstWrong == nil,
                                         predicted: tokenizer.decode(shown), answerLogProb: logProb)
                out.append(trial)
                progress?(String(format: "context %d: trial %d/%d  depth %.2f  key %d  %@  (%.0f tokens/s)",
                                 length, t + 1, trials, depth, key,
                                 trial.retrieved ? "retrieved" : "missed, greedy gives \"\(trial.predicted)\"",
                                 Double(p.ids.count) / Date().timeIntervalSince(t0)))
            }
            results.append(PasskeyResult(context: length, trials: out))
        }
        return results
    }
}
