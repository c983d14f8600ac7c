import Engine
import Foundation

/// `longtune pack` for instruction and chat data (docs/CONVENTIONS.md §21): records from .jsonl / .json files rendered
/// in a prompt format, tokenized with labels, packed whole into rows with a `labels` dataset.
public enum SFTPack {
    public struct Options {
        public var seqLen: Int
        /// nil: the tokenizer directory's chat format, else Alpaca's prompt for instruction records.
        public var format: String?
        public var trainOn: TrainOn = .assistant
        public var truncate = false
        public init(seqLen: Int, format: String? = nil, trainOn: TrainOn = .assistant, truncate: Bool = false) {
            self.seqLen = seqLen; self.format = format; self.trainOn = trainOn; self.truncate = truncate
        }
    }

    public struct Summary {
        public var samples = 0, rows = 0, tokens = 0, trainedTokens = 0, truncated = 0, responsesCut = 0
        public var fill = 0.0
        public var format = ""
    }

    /// The formats `--format` names.
    public static let formatNames = ["chat", "alpaca", "airoboros"]

    /// Whether the file's first record is an instruction or chat record (rather than {"text": …}).
    public static func holdsConversations(_ path: String) -> Bool {
        guard let first = firstRecord(path) else { return false }
        return (try? Conversation.parse(first, place: path)) != nil
    }

    /// The first JSON object of a .jsonl file (reading only its first line) or a .json array; nil otherwise.
    static func firstRecord(_ path: String) -> [String: Any]? {
        if path.hasSuffix(".json") { return (try? records(path))?.first?.record }
        guard path.hasSuffix(".jsonl"), let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var line = Data()
        while let chunk = try? handle.read(upToCount: 1 << 16), !chunk.isEmpty {
            if let end = chunk.firstIndex(of: 0x0A) { line.append(chunk[..<end]); break }
            line.append(chunk)
        }
        return try? JSONSerialization.jsonObject(with: line) as? [String: Any]
    }

    /// The JSON objects of a .jsonl (one per line) or .json (an array) file, with where each is.
    static func records(_ path: String) throws -> [(record: [String: Any], place: String)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LongTuneError("\(path): cannot read this input file")
        }
        if path.hasSuffix(".json") {
            guard let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
                throw LongTuneError("\(path): a .json input must be an array of objects")
            }
            return list.enumerated().map { ($1, "\(path) record \($0 + 1)") }
        }
        var out: [([String: Any], String)] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .enumerated() where !line.allSatisfy(\.isWhitespace) {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw LongTuneError("\(path) line \(i + 1): not a JSON object")
            }
            out.append((obj, "\(path) line \(i + 1)"))
        }
        return out
    }

    /// The prompt format: `--format`, else the model's chat format where its tokenizer_config.json has one, else
    /// Alpaca.
    public static func format(_ name: String?, tokenizerDir: URL, tokenizer: Tokenizer,
                              eos: Int32) throws -> SFTFormat {
        let eosText = String(decoding: tokenizer.bytes([eos]), as: UTF8.self)
        switch name {
        case "alpaca": return .alpaca(eos: eosText)
        case "airoboros": return .airoboros(eos: eosText)
        case "chat": return .chat(try ChatFormat.detect(directory: tokenizerDir), eos: eosText)
        case nil:
            return (try? ChatFormat.detect(directory: tokenizerDir)).map { .chat($0, eos: eosText) }
                ?? .alpaca(eos: eosText)
        case let other?:
            throw LongTuneError("--format \(other): use \(formatNames.joined(separator: ", ")) "
                                + "(default: the model's chat format, else alpaca)")
        }
    }

    /// Packs every record of `inputs` into `writer` (which must have a labels dataset).
    public static func run(inputs: [String], tokenizerPath: String, tokenizer: Tokenizer, eos: Int32,
                           writer: PackedWriter, options: Options,
                           progress: (Summary) -> Void = { _ in }) throws -> Summary {
        var dir = URL(fileURLWithPath: tokenizerPath)
        if dir.pathExtension == "json" { dir = dir.deletingLastPathComponent() }
        let format = try self.format(options.format, tokenizerDir: dir, tokenizer: tokenizer, eos: eos)
        let packer = SFTPacker(writer: writer, pad: eos, truncate: options.truncate)
        var summary = Summary()
        summary.format = "\(format)"
        for path in inputs {
            for (record, place) in try path.hasSuffix(".txt") ? [(["text": try text(path)], path)] : records(path) {
                try packer.add(try sample(record, place: place, format: format, tokenizer: tokenizer, options: options),
                               place: place)
            }
            summary.samples = packer.samples; summary.rows = writer.rows
            progress(summary)
        }
        try packer.finish()
        summary.samples = packer.samples; summary.rows = writer.rows; summary.tokens = packer.tokens
        summary.trainedTokens = packer.trainedTokens; summary.truncated = packer.truncated
        summary.responsesCut = packer.responsesCut; summary.fill = packer.fill
        return summary
    }

    static func text(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LongTuneError("\(path): cannot read this input file")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// One record as a sample: a conversation rendered in `format`, or a {"text"} record trained whole.
    public static func sample(_ record: [String: Any], place: String, format: SFTFormat, tokenizer: Tokenizer,
                       options: Options) throws -> SFTSample {
        if let c = try Conversation.parse(record, place: place) {
            let (text, trained) = try format.render(c, trainOn: options.trainOn)
            let bos: Int32? = if case .alpaca = format { tokenizer.bosPrefix } else { nil }
            do { return try SFTSample(text: text, trained: trained, tokenizer: tokenizer, bos: bos) } catch {
                throw LongTuneError("\(place): \(error)")
            }
        }
        guard let text = record["text"] as? String else {
            throw LongTuneError("\(place): neither a conversation (messages, conversations), an instruction "
                                + "(instruction, output; prompt, completion) nor a {\"text\": …} record")
        }
        return try SFTSample(text: text, trained: [0..<text.utf8.count], tokenizer: tokenizer)
    }
}
