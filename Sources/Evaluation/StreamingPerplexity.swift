import Datasets
import Engine
import Foundation
import Llama

/// Perplexity over a stream far longer than the cache (StreamingLLM's experiment,
/// docs/CONVENTIONS.md §11): every token is predicted once, decoded on a KV cache that keeps what its
/// policy says, and the losses are reported per segment of the stream.
public struct StreamingSegment: Codable, Equatable, Sendable {
    public let start: Int            // targets start..<end of the stream
    public let end: Int
    public let nll: Double
    public let perplexity: Double
}

public struct StreamingResult: Codable, Equatable, Sendable {
    public let setting: String       // what the model saw, in words
    public let sinks: Int?
    public let window: Int?
    public let tokens: Int           // targets scored
    public let nll: Double
    public let perplexity: Double
    public let tokensPerSecond: Double
    public let segments: [StreamingSegment]
}

public enum StreamingPerplexity {
    /// `eval streaming`'s rows over one stream: a window-only cache of S + W tokens, S sinks + a window of W, fresh
    /// windows of S + W tokens, and fresh windows of the model's own (pre-training) window when that is longer than
    /// the cache and shorter than the stream; each reported by segments of `segment` tokens (default: a 16th).
    /// `progress` gets a status line as each row runs.
    public static func compare(model lm: LlamaForCausalLM, stream: [Int32], sinks: Int, window: Int, chunk: Int,
                               segment: Int?, progress: @escaping (String) -> Void) throws -> [StreamingResult] {
        guard sinks >= 1 else { throw LongTuneError("--sinks must be at least 1 (the window-only row is always run)") }
        let cacheSize = sinks + window
        let policies = [("window \(cacheSize)", try CachePolicy(sinks: 0, window: cacheSize)),
                        ("\(sinks) sinks + window \(window)", try CachePolicy(sinks: sinks, window: window))]
        let size = segment ?? max(1, (stream.count - 1) / 16)
        guard size >= 1 else { throw LongTuneError("--segment must be at least 1") }
        func timed(_ name: String, sinks: Int?, window: Int?,
                   _ body: (@escaping (Int) -> Void) throws -> [Double]) throws -> StreamingResult {
            let t0 = Date()
            let losses = try body { done in
                let rate = Double(done) / Date().timeIntervalSince(t0)
                progress(String(format: "%@: %d/%d tokens  %.0f tokens/s", name, done, stream.count - 1, rate))
            }
            return try result(name, sinks: sinks, window: window, losses: losses,
                              seconds: Date().timeIntervalSince(t0), segment: size)
        }
        var results = try policies.map { name, policy in
            try timed(name, sinks: policy.sinks, window: policy.window) {
                try cachedLosses(model: lm, tokens: stream, policy: policy, chunk: chunk, progress: $0)
            }
        }
        // The model inside its own (pre-training) window, when that is longer than the cache.
        let own = lm.config.ropeScaling?.originalMaxPositionEmbeddings ?? lm.config.maxPositionEmbeddings
        let fresh = [(cacheSize, "fresh windows of \(cacheSize)")]
            + (own > cacheSize && own < stream.count ? [(own, "fresh windows of \(own) (its window)")] : [])
        for (length, name) in fresh {
            results.append(try timed(name, sinks: nil, window: nil) {
                try freshWindowLosses(model: lm, tokens: stream, length: length, progress: $0)
            })
        }
        return results
    }

    /// losses[t] = −log p(tokens[t+1] | what the cache holds at token t), decoding `chunk` tokens per
    /// forward pass (chunks give the same result as one token at a time; §11).
    public static func cachedLosses(model: LlamaForCausalLM, tokens: [Int32], policy: CachePolicy, chunk: Int,
                                    progress: ((Int) -> Void)? = nil) throws -> [Double] {
        guard chunk >= 1 else { throw LongTuneError("--chunk must be at least 1, got \(chunk)") }
        let cache = model.makeCache(policy)
        var losses: [Double] = []
        losses.reserveCapacity(tokens.count)
        for start in stride(from: 0, to: tokens.count - 1, by: chunk) {
            let end = min(start + chunk, tokens.count - 1)
            let hidden = try model.forward(Array(tokens[start..<end]), cache: cache)
            losses += LMHeadLoss.perToken(hidden: hidden, weight: model.headWeight,
                                          targets: Array(tokens[(start + 1)...end]))
            progress?(end)
        }
        return losses
    }

    /// The model inside a window of `length` tokens: windows start every length − 1 tokens, so each
    /// token after the first is predicted once, from the part of its window before it.
    public static func freshWindowLosses(model: LlamaForCausalLM, tokens: [Int32], length: Int,
                                         progress: ((Int) -> Void)? = nil) throws -> [Double] {
        guard length >= 2 else { throw LongTuneError("window length must be at least 2, got \(length)") }
        var losses: [Double] = []
        for start in stride(from: 0, to: tokens.count - 1, by: length - 1) {
            let ids = Array(tokens[start..<min(start + length, tokens.count)])
            losses += try model.tokenLosses(ids: ids, context: try model.context(length: ids.count))
            progress?(start + ids.count - 1)
        }
        return losses
    }

    /// Mean losses over consecutive segments of `size` targets.
    public static func segments(_ losses: [Double], size: Int) -> [StreamingSegment] {
        stride(from: 0, to: losses.count, by: size).map { s in
            let e = min(s + size, losses.count)
            let nll = losses[s..<e].reduce(0, +) / Double(e - s)
            return StreamingSegment(start: s, end: e, nll: nll, perplexity: Foundation.exp(nll))
        }
    }

    public static func result(_ setting: String, sinks: Int?, window: Int?, losses: [Double], seconds: Double,
                              segment: Int) throws -> StreamingResult {
        let nll = losses.reduce(0, +) / Double(losses.count)
        guard nll.isFinite else { throw LongTuneError("\(setting): the mean loss is \(nll)") }
        return StreamingResult(setting: setting, sinks: sinks, window: window, tokens: losses.count, nll: nll,
                               perplexity: Foundation.exp(nll), tokensPerSecond: Double(losses.count) / seconds,
                               segments: segments(losses, size: segment))
    }
}
