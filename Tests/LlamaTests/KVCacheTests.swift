import Engine
import Formats
import Foundation
import Llama
import TestSupport
import XCTest

/// The decoder on a KV cache (docs/CONVENTIONS.md §11): a plain cache in chunks of any size gives
/// the full forward pass's hidden states; a sink + window cache equals a naive recomputation that
/// keeps the same tokens and rotates them by their slots, one token at a time.
final class KVCacheTests: XCTestCase {
    static func fixture(_ name: String) throws -> LlamaForCausalLM {
        let dir = TransformersGoldenTests.fixtures.appendingPathComponent(name)
        return try LlamaForCausalLM(directory: try ModelDirectory(dir))
    }

    static func tokens(_ n: Int, vocab: Int, seed: UInt64 = 5) -> [Int32] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Int32(rng.next() % UInt64(vocab)) }
    }

    /// Runs `ids` through `cache` in chunks of the given sizes (cycled) and returns every hidden row.
    static func chunked(_ model: LlamaForCausalLM, _ ids: [Int32], cache: KVCache, chunks: [Int]) throws -> [Float] {
        var out: [Float] = [], at = 0, i = 0
        while at < ids.count {
            let n = min(chunks[i % chunks.count], ids.count - at)
            out += try model.forward(Array(ids[at..<(at + n)]), cache: cache).array
            at += n; i += 1
        }
        return out
    }

    func testPlainCacheInChunksEqualsTheFullForwardPass() throws {
        for name in ["default_gqa", "yarn", "qwen2", "bias_headdim_untied", "llama3"] {
            let model = try Self.fixture(name)
            let ids = Self.tokens(80, vocab: model.config.vocabSize)
            let full = model.hiddenStates(Graph(recording: false), ids: ids, context: try model.context(length: 80))
            for chunks in [[80], [1], [7, 1, 30, 2], [33]] {
                let cached = try Self.chunked(model, ids, cache: model.makeCache(), chunks: chunks)
                assertClose(cached, full.value.array, atol: 2e-5, rtol: 1e-4, "\(name) chunks \(chunks)")
            }
        }
    }

    func testSinkCacheEqualsNaiveRecomputationBySlot() throws {
        for name in ["default_gqa", "yarn", "bias_headdim_untied"] {
            let model = try Self.fixture(name)
            let ids = Self.tokens(70, vocab: model.config.vocabSize, seed: 9)
            for (sinks, window) in [(4, 8), (0, 8), (2, 20), (1, 1)] {
                let naive = NaiveSinkDecoder(model: model, sinks: sinks, window: window).run(ids)
                for chunks in [[1], [5, 1, 13], [70]] {
                    let cache = model.makeCache(try CachePolicy(sinks: sinks, window: window))
                    let cached = try Self.chunked(model, ids, cache: cache, chunks: chunks)
                    assertClose(cached, naive, atol: 5e-5, rtol: 2e-4,
                                "\(name) sinks \(sinks) window \(window) chunks \(chunks)")
                }
            }
        }
    }

    func testCacheMemoryStaysFlatUnderAWindow() throws {
        let model = try BuiltinModels.make("tiny", seed: 1)
        let cache = model.makeCache(try CachePolicy(sinks: 4, window: 32))
        let ids = Self.tokens(400, vocab: model.config.vocabSize)
        for id in ids[..<100] { _ = try model.forward([id], cache: cache) }
        let early = cache.bytes
        for id in ids[100...] { _ = try model.forward([id], cache: cache) }
        XCTAssertEqual(cache.tokens, 400)
        XCTAssertEqual(cache.bytes, early, "a windowed cache must not grow with the stream")
        let plain = model.makeCache()
        _ = try Self.chunked(model, ids, cache: plain, chunks: [1])
        XCTAssertGreaterThan(plain.bytes, cache.bytes * 3, "a plain cache keeps every token")
    }

    func testPolicyRejectsNonsense() {
        expectError(["--sinks 4 needs --window"]) { _ = try CachePolicy(sinks: 4) }
        expectError(["--window must be in 1...2^40, got 0"]) { _ = try CachePolicy(window: 0) }
        expectError(["--sinks must be in 0...2^40, got -1"]) { _ = try CachePolicy(sinks: -1, window: 3) }
        expectError(["--window must be in 1...2^40"]) { _ = try CachePolicy(sinks: 4, window: Int.max) }
    }
}

/// The test oracle: StreamingLLM's cache as written, one token at a time. Every token's keys
/// (before RoPE) and values are kept; step t attends to the sinks 0..<S, the window max(S, t−W)..<t
/// and itself, each rotated by its slot in that list (sinks first), in Double.
struct NaiveSinkDecoder {
    let model: LlamaForCausalLM
    let sinks: Int, window: Int

    func run(_ ids: [Int32]) -> [Float] {
        let c = model.config
        let heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads, d = c.headDim, w = kvHeads * d
        var rawKeys = [[Float]](repeating: [], count: c.numHiddenLayers)
        var values = [[Float]](repeating: [], count: c.numHiddenLayers)
        var hidden: [Float] = []
        for (t, id) in ids.enumerated() {
            let kept = Array(0..<min(sinks, t)) + Array(stride(from: max(sinks, t - window), to: t, by: 1)) + [t]
            let slots = Array(0..<kept.count)
            let tables = model.ropeTables(positions: slots)
            let g = Graph(recording: false)
            var h = g.embedding([id], table: model.model.embed_tokens.weight)
            for (l, layer) in model.model.layers.enumerated() {
                let a = layer.self_attn
                let x = g.rmsNorm(h, weight: layer.input_layernorm.weight, eps: Float(c.rmsNormEps))
                let q = a.q_proj!(g, x).value.array, k = a.k_proj!(g, x).value.array, v = a.v_proj!(g, x).value.array
                rawKeys[l] += k; values[l] += v
                // Keys of the kept tokens rotated by slot; the query at the last slot.
                let keyRows = Tensor(shape: [kept.count, w], kept.flatMap { Array(rawKeys[l][($0 * w)..<($0 * w + w)]) })
                tables.rotate(keyRows.data, rows: kept.count, heads: kvHeads, headDim: d)
                let qRows = Tensor(shape: [kept.count, heads * d],
                                   [Float](repeating: 0, count: (kept.count - 1) * heads * d) + q)
                tables.rotate(qRows.data, rows: kept.count, heads: heads, headDim: d)
                let qr = Array(qRows.array.suffix(heads * d)), kr = keyRows.array
                var out = [Float](repeating: 0, count: heads * d)
                for hd in 0..<heads {
                    let kvh = hd / (heads / kvHeads)
                    var scores = kept.indices.map { j -> Double in
                        (0..<d).reduce(0.0) { $0 + Double(qr[hd * d + $1]) * Double(kr[j * w + kvh * d + $1]) }
                            / Double(d).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { Foundation.exp($0 - m) }
                    let z = scores.reduce(0, +)
                    for (j, token) in kept.enumerated() {
                        for e in 0..<d { out[hd * d + e] += Float(scores[j] / z * Double(values[l][token * w + kvh * d + e])) }
                    }
                }
                h = g.add(h, a.o_proj(g, Variable(Tensor(shape: [1, heads * d], out))))
                let m = layer.mlp
                let y = g.rmsNorm(h, weight: layer.post_attention_layernorm.weight, eps: Float(c.rmsNormEps))
                h = g.add(h, m.down_proj(g, g.swiglu(gate: m.gate_proj!(g, y), up: m.up_proj!(g, y))))
            }
            hidden += g.rmsNorm(h, weight: model.model.norm.weight, eps: Float(c.rmsNormEps)).value.array
        }
        return hidden
    }
}
