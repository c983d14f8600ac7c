import Datasets
import Engine
import Foundation
import Llama

/// Perplexity by context length: for each context C, windows of C consecutive tokens of the
/// dataset's stream start every `stride` tokens; the loss is the mean negative log-likelihood of
/// tokens 2…C of each window given their prefix, averaged over all windows.
public struct PerplexityResult: Codable, Equatable, Sendable {
    public let context: Int
    public let windows: Int
    public let tokens: Int
    public let nll: Double
    public let perplexity: Double
}

public enum Perplexity {
    public static func evaluate(model: LlamaForCausalLM, data: TokenDataset, contexts: [Int], stride: Int? = nil,
                                maxWindows: Int? = nil, progress: ((String) -> Void)? = nil) throws -> [PerplexityResult] {
        var results: [PerplexityResult] = []
        for c in contexts {
            guard c >= 2 else { throw EngineError("--context: each context length must be at least 2, got \(c)") }
            guard c <= data.totalTokens else {
                throw EngineError("\(data.url.path): context \(c) is longer than the dataset's \(data.totalTokens) tokens")
            }
            let step = stride ?? c
            guard step > 0 else { throw EngineError("--stride must be positive, got \(step)") }
            var starts = Array(Swift.stride(from: 0, through: data.totalTokens - c, by: step))
            if let m = maxWindows { starts = Array(starts.prefix(max(1, m))) }
            var total = 0.0
            let t0 = Date()
            for (w, start) in starts.enumerated() {
                let ids = try data.tokens(offset: start, count: c)
                let g = Graph(recording: false)
                let loss = model.loss(g, ids: ids, context: try model.context(length: c)).value[0]
                guard loss.isFinite else { throw EngineError("context \(c), window at token \(start): loss is \(loss)") }
                total += Double(loss) * Double(c - 1)
                if let progress {
                    let done = Double(w + 1), elapsed = Date().timeIntervalSince(t0)
                    let eta = elapsed / done * (Double(starts.count) - done)
                    progress(String(format: "context %d: window %d/%d  nll %.4f  %.0f tokens/s  ETA %.0fs",
                                    c, w + 1, starts.count, total / (done * Double(c - 1)), done * Double(c) / elapsed, eta))
                }
            }
            let tokens = starts.count * (c - 1)
            let nll = total / Double(tokens)
            results.append(PerplexityResult(context: c, windows: starts.count, tokens: tokens, nll: nll, perplexity: Foundation.exp(nll)))
        }
        return results
    }
}
