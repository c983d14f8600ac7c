import Datasets
import Engine
import Foundation
import Llama

/// Text generation on a KV cache: the prompt is prefilled in chunks through the cached decoder,
/// then tokens are decoded one at a time (docs/CONVENTIONS.md §11).
public struct GenerationSettings {
    public var maxTokens: Int                 // generated tokens at most (a stop token included)
    public var sampling: SamplingSettings
    public var cache: CachePolicy
    public var stopTokens: Set<Int32>         // generation ends after emitting one of these
    public var prefillChunk: Int              // prompt tokens per forward pass

    public init(maxTokens: Int, sampling: SamplingSettings = .greedy, cache: CachePolicy = .everything,
                stopTokens: Set<Int32> = [], prefillChunk: Int = 512) throws {
        guard maxTokens >= 1 else { throw LongTuneError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard prefillChunk >= 1 else { throw LongTuneError("prefill chunk must be at least 1, got \(prefillChunk)") }
        self.maxTokens = maxTokens; self.sampling = sampling; self.cache = cache
        self.stopTokens = stopTokens; self.prefillChunk = prefillChunk
    }
}

public struct GenerationStats: Codable, Equatable, Sendable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    public var cacheBytes = 0
    public var stoppedAtStopToken = false
    public var prefillTokensPerSecond: Double { Double(promptTokens) / max(prefillSeconds, 1e-9) }
    /// Tokens after the first (which the prefill produces) per second of decoding.
    public var decodeTokensPerSecond: Double { Double(max(generatedTokens - 1, 0)) / max(decodeSeconds, 1e-9) }
}

public enum Generation {
    /// Generates after `prompt`; `onToken` sees each token as it is chosen. Returns the generated
    /// tokens (a final stop token included) and timings.
    public static func run(model: LlamaForCausalLM, prompt: [Int32], settings: GenerationSettings,
                           onToken: (Int32) -> Void = { _ in }) throws -> (tokens: [Int32], stats: GenerationStats) {
        guard !prompt.isEmpty else { throw LongTuneError("generate: the prompt has no tokens") }
        var stats = GenerationStats(promptTokens: prompt.count)
        let cache = model.makeCache(settings.cache)
        cache.reserveCapacity(prompt.count + min(settings.maxTokens, 2048))   // beyond that it doubles as needed
        var sampler = Sampler(settings.sampling)
        // Dynamic NTK's and longrope's frequencies depend on the length of the forward pass: prefill in one piece,
        // as transformers does, so that the prompt's keys match.
        let wholePrompt = model.config.ropeScaling?.kind.dependsOnSequenceLength == true
        let chunk = wholePrompt ? prompt.count : settings.prefillChunk
        var t0 = Date()
        var last: Tensor? = nil
        for start in stride(from: 0, to: prompt.count, by: chunk) {
            last = try model.forward(Array(prompt[start..<min(start + chunk, prompt.count)]), cache: cache)
        }
        // A model whose weights hold NaN or ∞ would otherwise "generate" token 0 forever.
        func choose(_ logits: [Float], position: Int) throws -> Int32 {
            guard logits.allSatisfy(\.isFinite) else {
                throw LongTuneError("generate: the model's logits at token \(position) are not finite; "
                                    + "its weights (or the checkpoint's) are damaged")
            }
            return sampler.next(logits)
        }
        var next = try choose(model.logits(hidden: last!, row: last!.shape[0] - 1), position: prompt.count)
        stats.prefillSeconds = Date().timeIntervalSince(t0)
        t0 = Date()
        var tokens: [Int32] = []
        while true {
            tokens.append(next)
            onToken(next)
            if settings.stopTokens.contains(next) { stats.stoppedAtStopToken = true; break }
            if tokens.count >= settings.maxTokens { break }
            let h = try model.forward([next], cache: cache)
            next = try choose(model.logits(hidden: h, row: 0), position: prompt.count + tokens.count)
        }
        stats.decodeSeconds = Date().timeIntervalSince(t0)
        stats.generatedTokens = tokens.count
        stats.cacheBytes = cache.bytes
        return (tokens, stats)
    }

    /// The tokens that end generation for a model directory: `eos_token_id` of config.json and
    /// generation_config.json (a number or a list, as transformers reads them) and the tokenizer's EOS.
    public static func stopTokens(directory: URL, tokenizer: Tokenizer?) -> Set<Int32> {
        var stops = Set<Int32>()
        for name in ["config.json", "generation_config.json"] {
            guard let data = try? Data(contentsOf: directory.appendingPathComponent(name)),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
            if let one = json["eos_token_id"] as? Int { stops.insert(Int32(clamping: one)) }
            for id in json["eos_token_id"] as? [Int] ?? [] { stops.insert(Int32(clamping: id)) }
        }
        if let eos = tokenizer?.eosTokenId { stops.insert(eos) }
        return stops
    }

    /// A prompt's ids for a model directory and where generation stops: the text after the tokenizer's BOS, or with
    /// `chat` wrapped in the model's chat format (tokenizer_config.json), whose end of turn then also stops it.
    public static func prompt(_ text: String, directory: URL, tokenizer: Tokenizer,
                              chat: Bool) throws -> (ids: [Int32], stops: Set<Int32>) {
        guard chat else {
            return ((tokenizer.bosPrefix.map { [$0] } ?? []) + tokenizer.encode(text),
                    stopTokens(directory: directory, tokenizer: tokenizer))
        }
        let format = try ChatFormat.detect(directory: directory)
        return (tokenizer.encode(format.prompt(user: text)),
                stopTokens(directory: directory, tokenizer: tokenizer, format: format))
    }

    /// `stopTokens(directory:tokenizer:)` and, with a chat `format`, the token that ends its assistant turn.
    public static func stopTokens(directory: URL, tokenizer: Tokenizer, format: ChatFormat?) -> Set<Int32> {
        var stops = stopTokens(directory: directory, tokenizer: tokenizer)
        if let end = format?.endOfTurn.flatMap(tokenizer.id(of:)) { stops.insert(end) }
        return stops
    }
}

extension GenerationStats {
    /// The line `generate` ends with on stderr: prefill and decode speed, where it stopped, the cache.
    public func summary(cache: CachePolicy) -> String {
        String(format: "prompt %d tokens: prefill %.2f s (%.0f tokens/s); %d tokens generated, decode %.1f tokens/s%@; "
                   + "KV cache %.1f MiB (%@)",
               promptTokens, prefillSeconds, prefillTokensPerSecond, generatedTokens, decodeTokensPerSecond,
               stoppedAtStopToken ? " (stopped at EOS)" : "", Double(cacheBytes) / 1_048_576, cache.description)
    }
}
