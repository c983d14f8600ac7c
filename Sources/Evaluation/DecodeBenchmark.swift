import Engine
import Foundation
import Llama

/// `bench decode`: prefill and decoding speed of `Generation.run` on random prompt ids, against the memory-bandwidth
/// limit of decoding (every weight is read once per generated token).
public enum DecodeBenchmark {
    /// What one run measured; its JSON keys are `bench decode --json`'s.
    public struct Result: Encodable {
        public let model: String
        public let promptTokens: Int
        public let stats: GenerationStats
        public let cache: String
        /// Bytes decoding reads per token: every linear layer's weight (the LM head included) and the norms, as stored.
        public let weightBytesPerToken: Int
        public let copyBandwidth: Double, readBandwidth: Double   // bytes/s
        public let peakRSSGiB: Double
        public let threads: Int

        /// The copy-bandwidth limit: tokens/s if each token cost reading its weights at memcpy speed.
        public var limit: Double { copyBandwidth / Double(weightBytesPerToken) }

        enum CodingKeys: String, CodingKey {
            case model, threads
            case promptTokens = "prompt_tokens", generatedTokens = "generated_tokens"
            case prefill = "prefill_tokens_per_second", decode = "decode_tokens_per_second"
            case weightBytes = "weight_bytes_per_token", copy = "copy_bandwidth_gb_s", read = "read_bandwidth_gb_s"
            case limit = "bandwidth_limit_tokens_per_second", fraction = "fraction_of_limit"
            case cacheBytes = "cache_bytes", peak = "peak_rss_gib"
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(model, forKey: .model); try c.encode(threads, forKey: .threads)
            try c.encode(promptTokens, forKey: .promptTokens)
            try c.encode(stats.generatedTokens, forKey: .generatedTokens)
            try c.encode(stats.prefillTokensPerSecond, forKey: .prefill)
            try c.encode(stats.decodeTokensPerSecond, forKey: .decode)
            try c.encode(weightBytesPerToken, forKey: .weightBytes)
            try c.encode(copyBandwidth / 1e9, forKey: .copy); try c.encode(readBandwidth / 1e9, forKey: .read)
            try c.encode(limit, forKey: .limit); try c.encode(stats.decodeTokensPerSecond / limit, forKey: .fraction)
            try c.encode(stats.cacheBytes, forKey: .cacheBytes); try c.encode(peakRSSGiB, forKey: .peak)
        }
    }

    /// Measures the memory bandwidth, then loads the model (`load`, so that the peak includes it), warms up and
    /// generates `tokens` tokens after a prompt of `promptTokens` random ids under `cache`.
    public static func run(name: String, promptTokens: Int, tokens: Int, cache: CachePolicy,
                           load: () throws -> LlamaForCausalLM) throws -> Result {
        guard promptTokens >= 1, tokens >= 2 else { throw LongTuneError("--prompt-tokens ≥ 1 and --tokens ≥ 2") }
        let (copy, read) = bandwidth()
        MemoryStats.resetProcessPeakRSS()
        let lm = try load()
        var rng = SplitMix64(seed: 4)
        let prompt = (0..<promptTokens).map { _ in Int32(rng.next() % UInt64(lm.config.vocabSize)) }
        let settings = try GenerationSettings(maxTokens: tokens, cache: cache)
        _ = try Generation.run(model: lm, prompt: Array(prompt.prefix(16)),
                               settings: try GenerationSettings(maxTokens: 4))
        let (_, stats) = try Generation.run(model: lm, prompt: prompt, settings: settings)
        return Result(model: name, promptTokens: promptTokens, stats: stats, cache: "\(cache)",
                      weightBytesPerToken: weightBytesPerToken(lm), copyBandwidth: copy, readBandwidth: read,
                      peakRSSGiB: Double(MemoryStats.processPeakRSS()) / 1_073_741_824, threads: Parallel.threads)
    }

    /// Every linear layer's weight (the LM head included) and the norms, as stored: a quantized projection at its
    /// compressed size (the limit of a kernel that reads it directly), a 16-bit tied head at 2 bytes a value.
    static func weightBytesPerToken(_ lm: LlamaForCausalLM) -> Int {
        let shapes: [(String, [Int])] = lm.modules().filter { !($0 is Embedding) }.flatMap(\.parameterShapes)
        let quantized = Set(lm.quantizableLinears.filter { $0.quantized != nil }.map { $0.path + ".weight" })
        let untiedBytes = lm.quantizedBytes
            + 4 * shapes.filter { !quantized.contains($0.0) }.reduce(0) { $0 + $1.1.reduce(1, *) }
        let tiedHead = lm.config.tieWordEmbeddings ? lm.config.vocabSize * lm.config.hiddenSize : 0
        return untiedBytes + (lm.model.embed_tokens.frozen16 == nil ? 4 : 2) * tiedHead
    }

    /// Best of three: memcpy of 512 MiB split over the cores (bytes read + written per second), and a
    /// read-only sum over the same buffer.
    public static func bandwidth() -> (copy: Double, read: Double) {
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
