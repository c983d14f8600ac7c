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
    /// Perplexity of the labelled tokens of a dataset with `labels` (SFT data: the replies and their end-of-turn
    /// tokens), row by row with attention kept inside each packed sample: the targets training scores (§8, §21).
    public static func labelled(model: LlamaForCausalLM, data: TokenDataset, maxRows: Int? = nil,
                                progress: ((String) -> Void)? = nil) throws -> PerplexityResult {
        let rows = min(data.shape[0], maxRows ?? Int.max), length = data.shape[1]
        var sum = 0.0, count = 0
        let t0 = Date()
        for r in 0..<rows {
            let ids = try data.row(r), starts = try data.documentStarts(r)
            let targets = try CausalLM.targets(ids: ids, labels: try data.optionalRow("labels", r),
                                               documentStarts: starts)
            let losses = try model.tokenLosses(ids: ids,
                                               context: try model.context(length: length, documentStarts: starts))
            for (t, loss) in losses.enumerated() where targets[t] != -100 {
                sum += loss
                count += 1
            }
            let rate = Double((r + 1) * length) / max(Date().timeIntervalSince(t0), 1e-3)
            progress?(String(format: "row %d/%d  %.0f tokens/s  ETA %.0fs", r + 1, rows, rate,
                             Double((rows - r - 1) * length) / rate))
        }
        guard count > 0 else { throw LongTuneError("\(data.url.path): no labelled token in the first \(rows) rows") }
        return PerplexityResult(context: length, windows: rows, tokens: count, nll: sum / Double(count),
                                perplexity: exp(sum / Double(count)))
    }

    /// Windows of different context lengths that start at the same token share one forward pass of
    /// the longest: with causal attention a token's loss depends only on its prefix, so the shorter
    /// window's losses are the first entries of the longer one's. Under dynamic RoPE the frequencies
    /// depend on the window's length, so every window runs on its own.
    public static func evaluate(model: LlamaForCausalLM, data: TokenDataset, contexts: [Int], stride: Int? = nil,
                                maxWindows: Int? = nil,
                                progress: ((String) -> Void)? = nil) throws -> [PerplexityResult] {
        var windowStarts: [[Int]] = []
        for c in contexts {
            guard c >= 2 else { throw LongTuneError("--context: each context length must be at least 2, got \(c)") }
            guard c <= data.totalTokens else {
                throw LongTuneError(
                    "\(data.url.path): context \(c) is longer than the dataset's \(data.totalTokens) tokens")
            }
            let step = stride ?? c
            guard step > 0 else { throw LongTuneError("--stride must be positive, got \(step)") }
            var starts = Array(Swift.stride(from: 0, through: data.totalTokens - c, by: step))
            if let m = maxWindows { starts = Array(starts.prefix(max(1, m))) }
            windowStarts.append(starts)
        }
        // Forward passes: (start, length, the contexts it serves).
        var passes: [(start: Int, length: Int, serves: [Int])] = []
        if model.config.ropeScaling?.kind == .dynamic {
            for (ci, starts) in windowStarts.enumerated() { for s in starts { passes.append((s, contexts[ci], [ci])) } }
        } else {
            var byStart: [Int: [Int]] = [:]
            for (ci, starts) in windowStarts.enumerated() { for s in starts { byStart[s, default: []].append(ci) } }
            for s in byStart.keys.sorted() {
                let serves = byStart[s]!
                passes.append((s, serves.map { contexts[$0] }.max()!, serves))
            }
        }
        var totals = [Double](repeating: 0, count: contexts.count)
        let t0 = Date()
        var tokensDone = 0
        let tokensAll = passes.reduce(0) { $0 + $1.length }
        for (pi, pass) in passes.enumerated() {
            let ids = try data.tokens(offset: pass.start, count: pass.length)
            let losses = try model.tokenLosses(ids: ids, context: try model.context(length: pass.length))
            for ci in pass.serves {
                let c = contexts[ci]
                let sum = losses[0..<(c - 1)].reduce(0, +)
                guard sum.isFinite else {
                    throw LongTuneError("context \(c), window at token \(pass.start): loss is \(sum)")
                }
                totals[ci] += sum
            }
            tokensDone += pass.length
            if let progress {
                let elapsed = Date().timeIntervalSince(t0)
                let eta = elapsed / Double(tokensDone) * Double(tokensAll - tokensDone)
                let served = pass.serves.map { String(contexts[$0]) }.joined(separator: ",")
                progress(String(format: "pass %d/%d: %d tokens at token %d (context %@)  "
                                + "nll %.4f  %.0f tokens/s  ETA %.0fs",
                                pi + 1, passes.count, pass.length, pass.start, served,
                                losses.reduce(0, +) / Double(losses.count), Double(tokensDone) / elapsed, eta))
            }
        }
        return contexts.indices.map { ci in
            let tokens = windowStarts[ci].count * (contexts[ci] - 1)
            let nll = totals[ci] / Double(tokens)
            return PerplexityResult(context: contexts[ci], windows: windowStarts[ci].count, tokens: tokens, nll: nll,
                                    perplexity: Foundation.exp(nll))
        }
    }
}
