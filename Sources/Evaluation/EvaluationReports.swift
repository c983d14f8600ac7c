import Engine
import Foundation
import Llama

// The JSON files the evaluation commands write with `--json`: one Codable type each, whose CodingKeys are the file's
// keys. `longtune report` reads perplexity and passkey files back through `EvaluationFile`.

/// `eval perplexity --json`.
public struct PerplexityReport: Codable, Sendable {
    public let model: String
    public let ropeScaling: RopeScaling?
    /// The window the model was pre-trained with (what RoPE scaling extends): the report marks it.
    public let originalContext: Int
    public let results: [PerplexityResult]

    enum CodingKeys: String, CodingKey {
        case model, ropeScaling = "rope_scaling", originalContext = "original_context", results
    }

    public init(model: String, config: LlamaConfig, results: [PerplexityResult]) {
        self.model = model
        ropeScaling = config.ropeScaling
        originalContext = config.ropeScaling?.originalMaxPositionEmbeddings ?? config.maxPositionEmbeddings
        self.results = results
    }
}

/// `eval passkey --json`.
public struct PasskeyReport: Codable, Sendable {
    public let model: String
    public let checkpoint: String?
    public let results: [PasskeyResult]

    public init(model: String, checkpoint: String?, results: [PasskeyResult]) {
        self.model = model; self.checkpoint = checkpoint; self.results = results
    }
}

/// `eval streaming --json`.
public struct StreamingReport: Codable, Sendable {
    public let model: String
    public let checkpoint: String?
    public let data: String
    public let offset: Int
    public let results: [StreamingResult]

    public init(model: String, checkpoint: String?, data: String, offset: Int, results: [StreamingResult]) {
        self.model = model; self.checkpoint = checkpoint; self.data = data; self.offset = offset; self.results = results
    }
}

/// `generate --json` (printed on standard output).
public struct GenerationReport: Codable, Sendable {
    public let promptTokens: [Int32]
    public let tokens: [Int32]
    public let text: String
    public let stats: GenerationStats
    public let cache: String

    enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", tokens, text, stats, cache }

    public init(promptTokens: [Int32], tokens: [Int32], text: String, stats: GenerationStats, cache: String) {
        self.promptTokens = promptTokens; self.tokens = tokens; self.text = text; self.stats = stats; self.cache = cache
    }

    /// As `generate --json` prints it: pretty, keys sorted.
    public var json: Data {
        get throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return try encoder.encode(self)
        }
    }
}

/// An evaluation file `longtune report` charts: perplexity by context length, or a passkey map.
public enum EvaluationFile {
    case perplexity(PerplexityReport)
    case passkey(PasskeyReport)
    case ruler(RulerReport)

    /// Reads `url` as either kind (a passkey file's results have trials), naming the file in errors.
    public static func read(_ url: URL) throws -> EvaluationFile {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw LongTuneError("\(url.path): cannot read this file")
        }
        let decoder = JSONDecoder()
        if let passkey = try? decoder.decode(PasskeyReport.self, from: data) { return .passkey(passkey) }
        if let ruler = try? decoder.decode(RulerReport.self, from: data) { return .ruler(ruler) }
        do { return .perplexity(try decoder.decode(PerplexityReport.self, from: data)) } catch let e as DecodingError {
            throw LongTuneError("\(url.path): not a file written by eval perplexity, passkey or ruler --json "
                                + "(\(describe(e)))")
        }
    }
}
