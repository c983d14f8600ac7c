import Datasets
import Engine
import Foundation
import Llama

/// RULER's scoring (scripts/eval/evaluate.py and scripts/eval/synthetic/constants.py).
public enum RulerScoring {
    /// postprocess_pred: stripped, control characters turned into newlines, stripped again.
    public static func clean(_ prediction: String) -> String {
        var scalars = String.UnicodeScalarView()
        for c in strip(prediction.unicodeScalars) { scalars.append(c.value < 0x20 ? "\n" : c) }
        return String(String.UnicodeScalarView(strip(scalars)))
    }

    /// Python's `str.strip()`: its whitespace is Unicode's White_Space plus the separators U+001C…U+001F.
    static func strip(_ s: String.UnicodeScalarView) -> ArraySlice<Unicode.Scalar> {
        func space(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
        let a = Array(s)
        guard let first = a.firstIndex(where: { !space($0) }), let last = a.lastIndex(where: { !space($0) }) else {
            return []
        }
        return a[first...last]
    }

    /// string_match_all for one sample: the fraction of references that occur in the prediction, ignoring case.
    public static func matchAll(_ prediction: String, _ references: [String]) -> Double {
        let p = lower(prediction)
        return Double(references.filter { occurs(lower($0), in: p) }.count) / Double(max(references.count, 1))
    }

    /// string_match_part for one sample: 1 when any reference occurs in the prediction, ignoring case.
    public static func matchPart(_ prediction: String, _ references: [String]) -> Double {
        let p = lower(prediction)
        return references.contains { occurs(lower($0), in: p) } ? 1 : 0
    }

    /// Python's `str.lower()` as code points (Swift's, then the final sigma Python applies).
    static func lower(_ s: String) -> [Unicode.Scalar] {
        var scalars = Array(s.lowercased().unicodeScalars)
        for i in scalars.indices where scalars[i] == "σ" && i > 0 && scalars[i - 1].properties.isCased
            && (i + 1 == scalars.count || !scalars[i + 1].properties.isCased) {
            scalars[i] = "ς"
        }
        return scalars
    }

    /// Python's `in` for strings: code point by code point, no Unicode normalization.
    static func occurs(_ needle: [Unicode.Scalar], in haystack: [Unicode.Scalar]) -> Bool {
        guard !needle.isEmpty else { return true }
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<$0 + needle.count].elementsEqual(needle) }
    }

    /// A task's score: the samples' mean in percent, rounded to two decimals as Python's round(x, 2).
    public static func taskScore(_ perSample: [Double]) -> Double {
        round2(perSample.reduce(0, +) / Double(max(perSample.count, 1)) * 100)
    }

    static func round2(_ x: Double) -> Double { Double(String(format: "%.2f", x))! }
}

/// One sample's prompt, answer and score.
public struct RulerPrediction: Codable, Equatable, Sendable {
    public let outputs: [String]           // expected answers
    public let prediction: String          // the model's continuation after the answer prefix, cleaned
    public let score: Double               // string_match_all: fraction of `outputs` found
    public let promptTokens: Int
    public let seconds: Double
}

/// One task at one length.
public struct RulerTaskResult: Codable, Equatable, Sendable {
    public let task: String
    public let context: Int
    public let score: Double               // percent, as RULER reports it
    public let samples: [RulerPrediction]
}

/// What `eval ruler --json` writes and `longtune report` draws.
public struct RulerReport: Codable, Sendable {
    public struct Average: Codable, Equatable, Sendable { public let context: Int, score: Double }

    public let model: String
    public let checkpoint: String?
    public let ropeScaling: RopeScaling?   // the scaling the model ran with (nil: none)
    public let chatTemplate: Bool
    public let seed: UInt64
    public let threshold: Double
    public let results: [RulerTaskResult]
    public let averages: [Average]         // mean task score per context length
    public let effectiveLength: Int?       // longest length at which it and every shorter one reach `threshold`
    public let seconds: Double

    public init(model: String, checkpoint: String?, ropeScaling: RopeScaling? = nil, chatTemplate: Bool, seed: UInt64,
                threshold: Double, results: [RulerTaskResult], seconds: Double) {
        self.model = model; self.checkpoint = checkpoint; self.ropeScaling = ropeScaling
        self.chatTemplate = chatTemplate
        self.seed = seed; self.threshold = threshold; self.results = results; self.seconds = seconds
        averages = Set(results.map(\.context)).sorted().map { c in
            let scores = results.filter { $0.context == c }.map(\.score)
            return Average(context: c, score: RulerScoring.round2(scores.reduce(0, +) / Double(scores.count)))
        }
        effectiveLength = averages.prefix { $0.score >= threshold }.last?.context
    }
}

extension RulerReport {
    /// The results `eval ruler --resume` keeps from `file`, an earlier (perhaps interrupted) run's `--json`, and the
    /// seconds that run took: none when the file does not exist yet; an error naming the setting when it was written
    /// with other settings than `run`'s (model, checkpoint, RoPE scaling, prompts, seed) or another number of samples.
    public static func resumable(from file: URL, like run: RulerReport,
                                 samples: Int) throws -> (results: [RulerTaskResult], seconds: Double) {
        guard FileManager.default.fileExists(atPath: file.path) else { return ([], 0) }
        guard case .ruler(let earlier) = try EvaluationFile.read(file) else {
            throw LongTuneError("--resume: \(file.path) is not a file written by eval ruler --json; "
                                + "name another --json file")
        }
        let settings: [(name: String, earlier: String, now: String)] = [
            ("--model", earlier.model, run.model),
            ("--checkpoint", earlier.checkpoint ?? "none", run.checkpoint ?? "none"),
            ("RoPE scaling", RopeScaling.text(earlier.ropeScaling), RopeScaling.text(run.ropeScaling)),
            ("--no-chat-template", "\(!earlier.chatTemplate)", "\(!run.chatTemplate)"),
            ("--seed", "\(earlier.seed)", "\(run.seed)"),
        ] + earlier.results.filter { $0.samples.count != samples }.prefix(1)
            .map { ("--samples", "\($0.samples.count)", "\(samples)") }
        if let differs = settings.first(where: { $0.earlier != $0.now }) {
            throw LongTuneError("--resume: \(file.path) was written with \(differs.name) \(differs.earlier), this "
                                + "run has \(differs.now); run with the same settings, or name another --json file")
        }
        return (earlier.results, earlier.seconds)
    }

    /// Task × length scores, the average per length and the effective length, as `eval ruler` prints them.
    public var table: String {
        let contexts = averages.map(\.context)
        func row(_ name: String, _ cells: [String]) -> String {
            name.padding(toLength: 16, withPad: " ", startingAt: 0) + cells.map { pad($0, 9) }.joined()
        }
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        var lines = [row("task", contexts.map(String.init))]
        for task in results.map(\.task).reduce(into: [String](), { if !$0.contains($1) { $0.append($1) } }) {
            lines.append(row(task, contexts.map { c in
                results.first { $0.task == task && $0.context == c }.map { String(format: "%.1f", $0.score) } ?? "-"
            }))
        }
        lines.append(row("average", averages.map { String(format: "%.1f", $0.score) }))
        let effective = effectiveLength.map { "\($0) tokens" } ?? "below every length tested"
        lines.append(String(format: "effective length (average ≥ %.1f): %@; %.1f min", threshold, effective,
                            seconds / 60))
        return lines.joined(separator: "\n")
    }
}

/// `eval ruler`: each task's samples generated for each length, answered by greedy decoding, scored as RULER does.
public struct Ruler {
    public var tasks: [RulerTask]
    public var contexts: [Int]
    public var samples: Int
    public var seed: UInt64
    /// The model's chat template around the task ("{task_template}" for none), as RULER's model templates.
    public var wrapper: String
    public var stops: Set<Int32>
    public var chat: Bool { wrapper != Self.plain }

    static let plain = "{task_template}"

    /// Prompts in the model directory's chat format when it has one and `chat` is set (RULER's model template), else
    /// plain after the tokenizer's BOS; generation stops at the model's EOS or the end of the assistant's turn.
    public init(tasks: [RulerTask], contexts: [Int], samples: Int, seed: UInt64, directory: URL,
                tokenizer: Tokenizer, chat: Bool) throws {
        guard samples >= 1 else { throw LongTuneError("--samples must be at least 1, got \(samples)") }
        guard seed <= UInt64(UInt32.max) else {
            throw LongTuneError("--seed must be below 2^32 (NumPy's seeds, which RULER's vt draws from), got \(seed)")
        }
        if let short = contexts.first(where: { $0 < Self.minimumContext }) {
            throw LongTuneError("--context \(short): RULER's tasks need at least \(Self.minimumContext) tokens "
                                + "(haystack, template and the answer to generate)")
        }
        self.tasks = tasks; self.contexts = contexts; self.samples = samples; self.seed = seed
        let format = chat ? try? ChatFormat.detect(directory: directory) : nil
        wrapper = format?.prompt(user: Self.plain) ?? Self.plain
        stops = Generation.stopTokens(directory: directory, tokenizer: tokenizer, format: format)
    }

    /// The shortest context `eval ruler` accepts (RULER's own configurations start at 4096).
    public static let minimumContext = 1024

    public static let taskNames = RulerTask.allCases.map(\.rawValue).joined(separator: ", ")

    /// The task names `--tasks` accepts, and the one it was given wrong.
    public static func tasks(_ text: String?) throws -> [RulerTask] {
        guard let text else { return RulerTask.allCases }
        return try text.split(separator: ",").map { name in
            guard let t = RulerTask(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw LongTuneError("--tasks: unknown task \"\(name)\"; the tasks are "
                                    + taskNames)
            }
            return t
        }
    }

    /// Runs every task at every length, shortest first, taking those `earlier` holds from it (a resumed run);
    /// `finished` gets the results so far after each task (to save them), `progress` a line per sample with the time
    /// left.
    public func evaluate(model: LlamaForCausalLM, tokenizer: Tokenizer, earlier: [RulerTaskResult] = [],
                         finished: ([RulerTaskResult]) throws -> Void = { _ in },
                         progress: (String) -> Void = { _ in }) throws -> [RulerTaskResult] {
        var results: [RulerTaskResult] = []
        var clock = RulerClock(contexts: contexts, perContext: tasks.count * samples)
        for context in contexts {
            for task in tasks {
                if let done = earlier.first(where: { $0.task == task.rawValue && $0.context == context }) {
                    results.append(done)
                    for p in done.samples { clock.finished(context: context, seconds: p.seconds) }
                    continue
                }
                var generator = RulerGenerator(task: task, maxLength: context, seed: seed, wrapper: wrapper) {
                    tokenizer.encode($0).count
                }
                var predictions: [RulerPrediction] = []
                for (i, sample) in try generator.samples(samples).enumerated() {
                    let p = try answer(sample, task: task, model: model, tokenizer: tokenizer)
                    predictions.append(p)
                    clock.finished(context: context, seconds: p.seconds)
                    progress(String(format: "%@ at %d: sample %d/%d scored %.0f%% (%d tokens, %.0f s)  %@",
                                    task.rawValue, context, i + 1, samples, 100 * p.score, p.promptTokens,
                                    p.seconds, clock.remaining))
                }
                results.append(RulerTaskResult(task: task.rawValue, context: context,
                                               score: RulerScoring.taskScore(predictions.map(\.score)),
                                               samples: predictions))
                try finished(results)
            }
        }
        return results
    }

    /// Greedy decoding after the prompt and answer prefix, up to the task's generation length or a stop token.
    func answer(_ sample: RulerSample, task: RulerTask, model: LlamaForCausalLM,
                tokenizer: Tokenizer) throws -> RulerPrediction {
        let bos = chat ? [] : tokenizer.bosPrefix.map { [$0] } ?? []
        let ids = bos + tokenizer.encode(sample.input + sample.answerPrefix)
        let settings = try GenerationSettings(maxTokens: task.prompt.tokensToGenerate, stopTokens: stops,
                                              prefillChunk: 2048)
        let t0 = Date()
        let (tokens, _) = try Generation.run(model: model, prompt: ids, settings: settings)
        let text = RulerScoring.clean(tokenizer.decode(tokens.filter { !stops.contains($0) }))
        return RulerPrediction(outputs: sample.outputs, prediction: text,
                               score: RulerScoring.matchAll(text, sample.outputs), promptTokens: ids.count,
                               seconds: Date().timeIntervalSince(t0))
    }
}

/// Time left: seconds per sample measured at each length so far, scaled as length^1.5 to lengths not yet reached.
struct RulerClock {
    let contexts: [Int]
    let perContext: Int
    var done: [Int: (count: Int, seconds: Double)] = [:]

    init(contexts: [Int], perContext: Int) { self.contexts = contexts; self.perContext = perContext }

    mutating func finished(context: Int, seconds: Double) {
        let d = done[context] ?? (0, 0)
        done[context] = (d.count + 1, d.seconds + seconds)
    }

    var remaining: String {
        guard let (measured, d) = done.max(by: { $0.key < $1.key }).map({ ($0.key, $0.value) }) else { return "" }
        let perSample = d.seconds / Double(d.count)
        let left = contexts.reduce(0.0) { sum, c in
            let count = perContext - (done[c]?.count ?? 0)
            let each = done[c].map { $0.seconds / Double($0.count) }
                ?? perSample * pow(Double(c) / Double(measured), 1.5)
            return sum + Double(count) * each
        }
        guard left >= 1 else { return "" }
        let m = Int(left / 60)
        return m >= 60 ? "about \(m / 60) h \(m % 60) min left" : "about \(max(m, 1)) min left"
    }
}
