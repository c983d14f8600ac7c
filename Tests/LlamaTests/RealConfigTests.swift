import Foundation
import Llama
import TestSupport
import XCTest

/// Real configs (Tests/LlamaTests/Fixtures/real_configs, sources in Tools/reference/make_real_config_fixtures.py) read
/// as transformers reads them: the family, rotary share, window and original context, and the RoPE frequencies and
/// attention scaling at the original window and one token past it, where longrope switches to its long factors.
final class RealConfigTests: XCTestCase {
    static let directory = TransformersGoldenTests.fixtures.appendingPathComponent("real_configs")

    func testRealConfigsGiveTransformersFrequencies() throws {
        let expected = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.directory.appendingPathComponent("expected.json"))) as! [String: Any]
        let files = expected.keys.filter { $0.hasSuffix(".json") && (expected[$0] as! [String: Any])["sequences"] != nil }
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let e = expected[file] as! [String: Any]
            let config = try LlamaConfig.load(Self.directory.appendingPathComponent(file))
            XCTAssertEqual(config.ropeScaling?.kind.rawValue ?? "default", e["rope_type"] as? String, file)
            XCTAssertEqual(config.rotaryDim, e["rotary_dim"] as? Int, file)
            XCTAssertEqual(config.slidingWindow, e["sliding_window"] as? Int, file)
            let original = e["original_max_position_embeddings"] as! Int
            XCTAssertEqual(config.ropeScaling?.originalMaxPositionEmbeddings ?? config.maxPositionEmbeddings, original)
            for (length, sequence) in e["sequences"] as! [String: [String: Any]] {
                let f = RopeFrequencies(scaling: config.ropeScaling, theta: config.ropeTheta, rotaryDim: config.rotaryDim,
                                        maxPositionEmbeddings: config.maxPositionEmbeddings,
                                        sequenceLength: Int(length)!)
                assertClose(f.invFreq.map(Float.init), (sequence["inv_freq"] as! [Double]).map(Float.init),
                            atol: 0, rtol: 1e-6, "\(file) inv_freq at \(length) tokens")
                XCTAssertEqual(f.attentionFactor, sequence["attention_scaling"] as! Double, accuracy: 1e-9,
                               "\(file) attention scaling")
            }
        }
    }

    /// Gemma-3-1B-it's config.json (v4 style, no tie_word_embeddings) reads as transformers reads it: every sixth layer
    /// global, tied embeddings, the 512-token window, scores × 1/16, and both layer kinds' frequencies (transformers'
    /// Gemma3RotaryEmbedding).
    func testGemma3ConfigGivesTransformersLayersAndFrequencies() throws {
        let all = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.directory.appendingPathComponent("expected.json"))) as! [String: Any]
        let e = all["gemma3-1b-it-config.json"] as! [String: Any]
        let config = try LlamaConfig.load(Self.directory.appendingPathComponent("gemma3-1b-it-config.json"))
        XCTAssertEqual(config.layerTypes?.map(\.rawValue), e["layer_types"] as? [String])
        XCTAssertEqual(config.tieWordEmbeddings, e["tie_word_embeddings"] as? Bool)
        XCTAssertEqual(config.slidingWindow, e["sliding_window"] as? Int)
        XCTAssertEqual(config.attentionScale, 1 / Float(e["query_pre_attn_scalar"] as! Double).squareRoot())
        XCTAssertEqual(config.activation, .geluTanh)
        let model = LlamaForCausalLM(config: config)
        for (local, key) in [(false, "global_inv_freq"), (true, "local_inv_freq")] {
            let f = model.ropeFrequencies(sequenceLength: 1024, local: local)
            assertClose(f.invFreq.map(Float.init), (e[key] as! [Double]).map(Float.init), atol: 0, rtol: 1e-6, key)
            XCTAssertEqual(f.attentionFactor, 1)
        }
    }
}
