import Engine
import Foundation

/// Supervised fine-tuning samples (docs/CONVENTIONS.md §21): a conversation read from one JSON record, rendered in a
/// prompt format, tokenized, and labelled −100 everywhere but the tokens the model should learn to write.
public struct Conversation: Equatable {
    public enum Role: String { case system, user, assistant }
    public struct Message: Equatable {
        public var role: Role
        public var content: String
        public init(_ role: Role, _ content: String) { self.role = role; self.content = content }
    }
    public var messages: [Message]
    /// An instruction record's parts (Alpaca / LongAlpaca: instruction, input, output), kept for the Alpaca prompt.
    public var instruction: (instruction: String, input: String, output: String)?

    public init(messages: [Message]) { self.messages = messages }

    public static func == (a: Conversation, b: Conversation) -> Bool { a.messages == b.messages }

    /// The conversation in a JSON record, nil for a plain `{"text": …}` record. Accepted: `messages` (role, content),
    /// ShareGPT's `conversations` (from: system/human/gpt, value), `instruction` + `input`? + `output`, and
    /// `prompt` + `completion`. `place` names the record in errors ("file.jsonl line 3").
    public static func parse(_ record: [String: Any], place: String) throws -> Conversation? {
        func text(_ key: String, in obj: [String: Any], _ where_: String) throws -> String {
            guard let v = obj[key] else { throw LongTuneError("\(place): \(where_)\"\(key)\" is missing") }
            guard let s = v as? String else { throw LongTuneError("\(place): \(where_)\"\(key)\" is not a string") }
            return s
        }
        if let list = record["messages"] ?? record["conversations"] {
            let shareGPT = record["messages"] == nil
            guard let turns = list as? [[String: Any]], !turns.isEmpty else {
                throw LongTuneError("\(place): \"\(shareGPT ? "conversations" : "messages")\" must be a non-empty list "
                                    + "of objects")
            }
            let messages = try turns.enumerated().map { i, turn -> Message in
                let at = "\(shareGPT ? "conversations" : "messages")[\(i)]."
                let name = try text(shareGPT ? "from" : "role", in: turn, at)
                let aliases: [String: Role] = ["human": .user, "gpt": .assistant, "user": .user,
                                               "assistant": .assistant, "system": .system]
                guard let role = aliases[name] else {
                    throw LongTuneError("\(place): \(at)\(shareGPT ? "from" : "role") is \"\(name)\"; use system, user "
                                        + "or assistant (ShareGPT: system, human, gpt)")
                }
                return Message(role, try text(shareGPT ? "value" : "content", in: turn, at))
            }
            guard messages.contains(where: { $0.role == .assistant }) else {
                throw LongTuneError("\(place): no assistant turn, so nothing to train on")
            }
            return Conversation(messages: messages)
        }
        if record["instruction"] != nil {
            let instruction = try text("instruction", in: record, ""), output = try text("output", in: record, "")
            let input = record["input"] == nil ? "" : try text("input", in: record, "")
            var c = Conversation(messages: [Message(.user, input.isEmpty ? instruction : instruction + "\n\n" + input),
                                            Message(.assistant, output)])
            c.instruction = (instruction, input, output)
            return c
        }
        if record["prompt"] != nil || record["completion"] != nil {
            return Conversation(messages: [Message(.user, try text("prompt", in: record, "")),
                                           Message(.assistant, try text("completion", in: record, ""))])
        }
        return nil
    }
}

/// Which assistant turns are trained.
public enum TrainOn: String, CaseIterable, Sendable {
    /// Every assistant turn with its end-of-turn token (the default).
    case assistant
    /// Only the last assistant turn.
    case last
    /// Every token (the prompt too).
    case all
}

/// A prompt format for SFT: the model's own chat format, or Alpaca's instruction prompt as LongLoRA writes it.
public enum SFTFormat: Equatable, CustomStringConvertible {
    /// A chat format, and the EOS token text that ends a reply in the `[INST]` format.
    case chat(ChatFormat, eos: String)
    /// "Below is an instruction…" with `### Instruction:` / `### Input:` / `### Response:`, the response followed
    /// by EOS.
    case alpaca(eos: String)
    /// airoboros 2.2's (the airophin and airoboros long-context fine-tunes' model cards): the system text (default
    /// "A chat."), then `\nUSER: ` prompt and `\nASSISTANT: ` reply turns, each reply followed by EOS. Closed-context
    /// prompts (BEGININPUT / BEGINCONTEXT … ENDINSTRUCTION) are the records' own text.
    case airoboros(eos: String)

    static let alpacaWithInput = "Below is an instruction that describes a task, paired with an input that provides "
        + "further context. Write a response that appropriately completes the request.\n\n"
        + "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    static let alpacaNoInput = "Below is an instruction that describes a task. "
        + "Write a response that appropriately completes the request.\n\n"
        + "### Instruction:\n{instruction}\n\n### Response:"

    /// The rendered text and the byte ranges of it that are trained.
    public func render(_ c: Conversation, trainOn: TrainOn) throws -> (text: String, trained: [Range<Int>]) {
        var out = RenderedText()
        switch self {
        case .alpaca(let eos):
            guard let (instruction, input, output) = c.instruction ?? Self.instructionParts(c) else {
                throw LongTuneError("the Alpaca format takes one user turn and one assistant turn "
                                    + "(or an instruction record)")
            }
            let template = input.isEmpty ? Self.alpacaNoInput : Self.alpacaWithInput
            out.append(template.replacingOccurrences(of: "{instruction}", with: instruction)
                .replacingOccurrences(of: "{input}", with: input), trained: trainOn == .all)
            out.append(output + eos, trained: true)
        case .airoboros(let eos):
            let lastAssistant = c.messages.lastIndex { $0.role == .assistant }
            let system = c.messages.first { $0.role == .system }?.content ?? "A chat."
            out.append(system, trained: trainOn == .all)
            for (i, m) in c.messages.enumerated() where m.role != .system {
                let reply = m.role == .assistant
                out.append(reply ? "\nASSISTANT: " : "\nUSER: \(m.content)", trained: trainOn == .all)
                if reply {
                    out.append(m.content + eos, trained: trainOn != .last || i == lastAssistant)
                }
            }
        case .chat(let format, let eos):
            let lastAssistant = c.messages.lastIndex { $0.role == .assistant }
            for (part, i) in try format.turns(c.messages, eos: eos) {
                let isReply = i.map { c.messages[$0].role == .assistant } ?? false
                let trained = trainOn == .all || (isReply && (trainOn == .assistant || i == lastAssistant))
                out.append(part, trained: trained)
            }
        }
        return (out.text, out.trained)
    }

    public var description: String {
        switch self {
        case .alpaca: "Alpaca prompt"
        case .airoboros: "airoboros prompt"
        case .chat(.chatML, _): "ChatML"
        case .chat(.llama3, _): "Llama 3 chat"
        case .chat(.instruct, _): "[INST] chat"
        }
    }

    /// instruction / input / output of a two-turn conversation (prompt + completion records).
    static func instructionParts(_ c: Conversation) -> (String, String, String)? {
        guard c.messages.count == 2, c.messages[0].role == .user, c.messages[1].role == .assistant else { return nil }
        return (c.messages[0].content, "", c.messages[1].content)
    }
}

/// Text built from parts, with the byte ranges of the trained parts.
struct RenderedText {
    var text = ""
    var bytes = 0
    var trained: [Range<Int>] = []
    mutating func append(_ part: String, trained isTrained: Bool) {
        let n = part.utf8.count
        if isTrained && n > 0 {
            if let last = trained.last, last.upperBound == bytes {
                trained[trained.count - 1] = last.lowerBound..<(bytes + n)
            } else { trained.append(bytes..<(bytes + n)) }
        }
        text += part
        bytes += n
    }
}

extension ChatFormat {
    /// The conversation as the template writes it, in parts: (text, index of the message it belongs to, nil for the
    /// template's own text). An assistant message's part is its content and end-of-turn token; what opens its turn
    /// belongs to the template.
    func turns(_ messages: [Conversation.Message], eos: String) throws -> [(String, Int?)] {
        var parts: [(String, Int?)] = []
        switch self {
        case .chatML(let system):
            if messages.first?.role != .system, let system {
                parts.append(("<|im_start|>system\n\(system)<|im_end|>\n", nil))
            }
            for (i, m) in messages.enumerated() {
                parts.append(("<|im_start|>\(m.role.rawValue)\n", nil))
                if m.role == .assistant {
                    parts.append((m.content + "<|im_end|>", i))
                    parts.append(("\n", nil))
                } else {
                    parts.append((m.content + "<|im_end|>\n", i))
                }
            }
        case .llama3(let bos, let dateHeader):
            parts.append((bos, nil))
            var rest = messages[...]
            if let header = dateHeader {   // 3.1+: one system turn, the date header then the conversation's system text
                let system = rest.first?.role == .system ? rest.removeFirst().content.trimmed : ""
                parts.append(("<|start_header_id|>system<|end_header_id|>\n\n\(header)\(system)<|eot_id|>", nil))
            }
            for (i, m) in zip(rest.indices, rest) {
                parts.append(("<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n", nil))
                parts.append((m.content.trimmed + "<|eot_id|>", i))
            }
        case .instruct(let bos):   // the template writes no system turn
            parts.append((bos, nil))
            for (i, m) in messages.enumerated() where m.role != .system {
                parts.append(m.role == .user ? ("[INST] \(m.content) [/INST]", nil) : (m.content + eos, i))
            }
        }
        return parts
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// One tokenized sample: ids and labels (−100 where not trained).
public struct SFTSample {
    public var ids: [Int32]
    public var labels: [Int32]
    public var trainedTokens: Int { labels.lazy.filter { $0 != -100 }.count }

    /// `text` tokenized whole (added tokens matched first, no BOS added); a token is trained when any of its bytes
    /// lies in a trained range (as transformers' assistant masks mark every token a trained character falls in).
    /// `bos`: a token put before the text, not trained (the Alpaca path, as LongLoRA's tokenizer call adds it).
    public init(text: String, trained: [Range<Int>], tokenizer: Tokenizer, bos: Int32? = nil) throws {
        ids = tokenizer.encode(text)
        labels = [Int32](repeating: -100, count: ids.count)
        defer {
            if let bos { ids.insert(bos, at: 0); labels.insert(-100, at: 0) }
        }
        var start = 0
        for (i, id) in ids.enumerated() {
            let end = start + tokenizer.bytes([id]).count
            if trained.contains(where: { $0.overlaps(start..<max(end, start + 1)) }) { labels[i] = id }
            start = end
        }
        guard start == text.utf8.count else {
            throw LongTuneError("the tokenizer's tokens do not spell the rendered text byte for byte (a normalizer?); "
                                + "SFT packing needs a byte-level BPE tokenizer (SmolLM2, Llama 3, Qwen2)")
        }
    }
}

/// Packs SFT samples into rows (docs/CONVENTIONS.md §21): whole samples only, each its own document; the rest of a row
/// is EOS padding that is neither attended to by a sample nor trained. A sample longer than a row is an error, or
/// with `truncate` loses tokens from its start (the prompt side); one whose trained tokens are cut is counted.
public final class SFTPacker {
    let writer: PackedWriter
    let pad: Int32
    let truncate: Bool
    var row: [Int32] = [], rowLabels: [Int32] = [], rowDocs: [Int32] = []
    public private(set) var samples = 0, tokens = 0, trainedTokens = 0, truncated = 0, responsesCut = 0

    public init(writer: PackedWriter, pad: Int32, truncate: Bool) {
        self.writer = writer; self.pad = pad; self.truncate = truncate
    }

    public func add(_ sample: SFTSample, place: String) throws {
        var s = sample
        let length = writer.seqLen
        if s.ids.count > length {
            guard truncate else {
                throw LongTuneError("\(place): \(s.ids.count) tokens, more than a row of \(length); "
                                    + "pass --truncate to cut it on the prompt side, or a larger --seq-len")
            }
            let cut = s.ids.count - length
            if s.labels[..<cut].contains(where: { $0 != -100 }) { responsesCut += 1 }
            s.ids.removeFirst(cut); s.labels.removeFirst(cut)
            truncated += 1
        }
        guard s.trainedTokens > 0 else {
            throw LongTuneError("\(place): no token to train on (an empty reply, or --truncate cut all of it)")
        }
        if row.count + s.ids.count > length { try flush() }
        row += s.ids; rowLabels += s.labels
        rowDocs += [Int32](repeating: Int32(truncatingIfNeeded: samples), count: s.ids.count)
        samples += 1
        tokens += s.ids.count
        trainedTokens += s.trainedTokens
    }

    /// Writes the open row, padded.
    public func finish() throws { if !row.isEmpty { try flush() } }

    /// Fraction of the written rows' tokens that belong to samples.
    public var fill: Double { writer.rows == 0 ? 0 : Double(tokens) / Double(writer.rows * writer.seqLen) }

    func flush() throws {
        let padding = writer.seqLen - row.count
        try writer.append(ids: row + [Int32](repeating: pad, count: padding),
                          documents: rowDocs + [Int32](repeating: -1, count: padding),
                          labels: rowLabels + [Int32](repeating: -100, count: padding))
        row.removeAll(keepingCapacity: true); rowLabels.removeAll(keepingCapacity: true)
        rowDocs.removeAll(keepingCapacity: true)
    }
}
