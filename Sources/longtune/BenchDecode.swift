import ArgumentParser
import Engine
import Evaluation
import Formats
import Foundation
import Llama

/// `longtune bench decode`: prefill and decoding speed of `generate`, against the memory-bandwidth
/// limit of decoding (every weight is read once per generated token).
struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Prefill and decode tokens/s of generation, against the memory-bandwidth limit.")

    @OptionGroup var source: BenchModel
    @Option(help: "Prompt tokens (random ids).") var promptTokens = 512
    @Option(help: "Generated tokens (greedy, no stop token).") var tokens = 128
    @Option(help: "Attention sinks (with --window).") var sinks = 0
    @Option(help: "Cache window (recent tokens kept).") var window: Int?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let cache = try CachePolicy(sinks: sinks, window: window)
        let r = try DecodeBenchmark.run(name: source.model, promptTokens: promptTokens, tokens: tokens, cache: cache) {
            let lm = try source.load()
            lm.setComputeDType(source.storage.compute)
            return lm
        }
        if json { return print(String(decoding: try MachineReport.encoder.encode(r), as: UTF8.self)) }
        let s = r.stats
        print("model \(r.model), prompt \(r.promptTokens) tokens, \(s.generatedTokens) generated, "
              + "\(r.threads) threads, cache: \(r.cache)")
        print(String(format: "prefill %.0f tokens/s   decode %.1f tokens/s   KV cache %.1f MiB   peak RSS %.2f GiB",
                     s.prefillTokensPerSecond, s.decodeTokensPerSecond, Double(s.cacheBytes) / 1_048_576,
                     r.peakRSSGiB))
        print(String(format: "memory: copy %.1f GB/s (bytes read + written), read %.1f GB/s; "
                             + "weights %.0f MB per token -> copy-bandwidth limit %.1f tokens/s; "
                             + "decode reaches %.0f%% of it",
                     r.copyBandwidth / 1e9, r.readBandwidth / 1e9, Double(r.weightBytesPerToken) / 1e6, r.limit,
                     100 * s.decodeTokensPerSecond / r.limit))
    }
}
