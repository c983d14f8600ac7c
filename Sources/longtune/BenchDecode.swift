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
        guard promptTokens >= 1, tokens >= 2 else { throw EngineError("--prompt-tokens ≥ 1 and --tokens ≥ 2") }
        let (copy, read) = Self.bandwidth()
        MemoryStats.resetProcessPeakRSS()
        let lm = try source.load()
        lm.setComputeDType(source.storage.compute)
        var rng = SplitMix64(seed: 4)
        let prompt = (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(lm.config.vocabSize)) }
        let settings = try GenerationSettings(maxTokens: tokens, cache: try CachePolicy(sinks: sinks, window: window))
        _ = try Generation.run(model: lm, prompt: Array(prompt.prefix(16)),
                               settings: try GenerationSettings(maxTokens: 4))
        let (_, stats) = try Generation.run(model: lm, prompt: prompt, settings: settings)
        // Bytes decoding reads per token: every linear layer's weight (the LM head included) and the norms, as
        // stored (a quantized projection at its compressed size: the limit of a kernel that reads it directly).
        let shapes: [(String, [Int])] = lm.modules().filter { !($0 is Embedding) }.flatMap(\.parameterShapes)
        let quantized = Set(lm.quantizableLinears.filter { $0.quantized != nil }.map { $0.path + ".weight" })
        let untiedBytes = lm.quantizedBytes
            + 4 * shapes.filter { !quantized.contains($0.0) }.reduce(0) { $0 + $1.1.reduce(1, *) }
        let tiedHead = lm.config.tieWordEmbeddings ? lm.config.vocabSize * lm.config.hiddenSize : 0
        let weightBytes = untiedBytes + (lm.model.embed_tokens.frozen16 == nil ? 4 : 2) * tiedHead
        let limit = copy / Double(weightBytes)
        let decode = stats.decodeTokensPerSecond
        let peak = Double(MemoryStats.processPeakRSS()) / 1_073_741_824
        if json {
            let obj: [String: Any] = [
                "model": source.model, "prompt_tokens": promptTokens, "generated_tokens": stats.generatedTokens,
                "prefill_tokens_per_second": stats.prefillTokensPerSecond, "decode_tokens_per_second": decode,
                "weight_bytes_per_token": weightBytes, "copy_bandwidth_gb_s": copy / 1e9,
                "read_bandwidth_gb_s": read / 1e9, "bandwidth_limit_tokens_per_second": limit,
                "fraction_of_limit": decode / limit, "cache_bytes": stats.cacheBytes, "peak_rss_gib": peak,
                "threads": Parallel.threads]
            let encoded = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: encoded, as: UTF8.self))
        } else {
            print("model \(source.model), prompt \(promptTokens) tokens, \(stats.generatedTokens) generated, "
                  + "\(Parallel.threads) threads, cache: \(settings.cache)")
            print(String(format: "prefill %.0f tokens/s   decode %.1f tokens/s   KV cache %.1f MiB   peak RSS %.2f GiB",
                         stats.prefillTokensPerSecond, decode, Double(stats.cacheBytes) / 1_048_576, peak))
            print(String(format: "memory: copy %.1f GB/s (bytes read + written), read %.1f GB/s; "
                                 + "weights %.0f MB per token -> copy-bandwidth limit %.1f tokens/s; "
                                 + "decode reaches %.0f%% of it",
                         copy / 1e9, read / 1e9, Double(weightBytes) / 1e6, limit, 100 * decode / limit))
        }
    }

    /// Best of three: memcpy of 512 MiB split over the cores (bytes read + written per second), and a
    /// read-only sum over the same buffer.
    static func bandwidth() -> (copy: Double, read: Double) {
        let n = 128 << 20   // floats
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n), b = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { a.deallocate(); b.deallocate() }
        a.initialize(repeating: 1, count: n); b.initialize(repeating: 0, count: n)
        var copy = 0.0, read = 0.0
        var sink: Float = 0
        for _ in 0..<3 {
            var t0 = DispatchTime.now().uptimeNanoseconds
            Parallel.chunks(n, minChunk: 1 << 20) { r in
                (b + r.lowerBound).update(from: a + r.lowerBound, count: r.count)
            }
            copy = max(copy, Double(8 * n) / (Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9))
            t0 = DispatchTime.now().uptimeNanoseconds
            let parts = Parallel.threads
            var sums = [Float](repeating: 0, count: parts)
            sums.withUnsafeMutableBufferPointer { s in
                Parallel.forEach(parts) { p in
                    var acc = SIMD16<Float>()
                    let lo = n / parts * p, hi = p == parts - 1 ? n : n / parts * (p + 1)
                    var i = lo
                    while i + 16 <= hi {
                        acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD16<Float>.self)
                        i += 16
                    }
                    s[p] = acc.sum()
                }
            }
            read = max(read, Double(4 * n) / (Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9))
            sink += sums.reduce(0, +)
        }
        if sink == -1 { print("") }   // keeps the sums
        return (copy, read)
    }
}
