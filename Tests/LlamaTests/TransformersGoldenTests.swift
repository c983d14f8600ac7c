import Engine
import Formats
import Foundation
import Llama
import TestSupport
import XCTest

/// Logits, loss and rotary frequencies of tiny checkpoints against transformers
/// (fixtures from Tools/reference/make_llama_fixtures.py).
final class TransformersGoldenTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Self.fixtures.appendingPathComponent(name)
        let model = try LlamaForCausalLM(directory: try ModelDirectory(dir))
        let expected = try SafetensorsFile(dir.appendingPathComponent("expected.safetensors"))
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as! [String: Any]
        let ids = try expected.tensor("input_ids").array.map { Int32($0) }

        let ctx = try model.context(length: ids.count)
        // Rotary frequencies and attention factor (transformers updates dynamic/longrope for this length).
        let f = RopeFrequencies(scaling: model.config.ropeScaling, theta: model.config.ropeTheta, rotaryDim: model.config.rotaryDim,
                                maxPositionEmbeddings: model.config.maxPositionEmbeddings, sequenceLength: ids.count)
        assertClose(f.invFreq.map { Float($0) }, try expected.tensor("inv_freq").array, rtol: 2e-7, "\(name) inv_freq", file: file, line: line)
        XCTAssertEqual(f.attentionFactor, info["attention_scaling"] as! Double, accuracy: 1e-6, "\(name) attention factor", file: file, line: line)

        let logits = try model.logits(ids: ids)
        assertClose(logits.array, try expected.tensor("logits").array, atol: 1e-4, "\(name) logits", file: file, line: line)
        let g = Graph(recording: false)
        let loss = try model.loss(g, ids: ids, context: ctx).value[0]
        XCTAssertEqual(Double(loss), info["loss"] as! Double, accuracy: 1e-4, "\(name) loss", file: file, line: line)
    }

    func testDefaultRopeWithGroupedQueryAttention() throws { try check("default_gqa") }
    func testLinearV4ConfigBF16Weights() throws { try check("linear_v4") }
    func testDynamicNTK() throws { try check("dynamic") }
    func testYaRN() throws { try check("yarn") }
    func testYaRNWithMscaleV4Config() throws { try check("yarn_mscale_v4") }
    func testLlama3() throws { try check("llama3") }
    func testLongRoPE() throws { try check("longrope") }
    func testStaticNTKAlpha() throws { try check("ntk_alpha") }
    func testAttentionAndMLPBiasExplicitHeadDimUntiedHead() throws { try check("bias_headdim_untied") }
    func testQwen2() throws { try check("qwen2") }
    func testQwen3QueryKeyNormsYaRN() throws { try check("qwen3") }
    func testMistralSlidingWindow() throws { try check("mistral_window") }
    func testPhi3FusedProjectionsPartialRotaryLongRoPEWindow() throws { try check("phi3") }
    func testGemma3LocalAndGlobalLayersV5RopeParameters() throws { try check("gemma3") }
    func testGemma3V4ConfigBF16Weights() throws { try check("gemma3_v4") }

    /// Gemma 3 config values the model code cannot run are errors naming the field.
    func testGemma3ConfigRefusals() throws {
        let base = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixtures
            .appendingPathComponent("gemma3/config.json"))) as! [String: Any]
        var local = base["rope_parameters"] as! [String: Any]
        local["sliding_attention"] = ["rope_type": "linear", "factor": 2.0, "rope_theta": 1e4]
        let cases: [([String: Any], String)] = [
            (["layer_types": ["sliding_attention", "full_attention"]], "layer_types: has 2 entries for 3 layers"),
            (["sliding_window": NSNull()], "sliding_window: is needed"),
            (["final_logit_softcapping": 30.0], "final_logit_softcapping: soft-capping"),
            (["attn_logit_softcapping": 50.0], "attn_logit_softcapping: soft-capping"),
            (["use_bidirectional_attention": true], "use_bidirectional_attention: true"),
            (["rope_parameters": local], "rope_parameters.sliding_attention: scaling (linear)"),
            (["query_pre_attn_scalar": -1], "query_pre_attn_scalar: must be positive"),
            (["hidden_activation": "relu"], "hidden_activation: \"relu\" is not supported"),
            (["layer_types": ["sliding_attention", "bogus", "full_attention"]], "layer_types"),
        ]
        for (change, needle) in cases {
            let json = base.merging(change) { $1 }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-\(UUID().uuidString).json")
            defer { try? FileManager.default.removeItem(at: url) }
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            XCTAssertThrowsError(try LlamaConfig.load(url), needle) {
                XCTAssertTrue("\($0)".contains(url.path) && "\($0)".contains(needle), "\(needle): \($0)")
            }
        }
        var v4 = base
        v4["rope_parameters"] = nil
        v4["rope_theta"] = 1e6
        v4["rope_local_base_freq"] = 0.5
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try JSONSerialization.data(withJSONObject: v4).write(to: url)
        XCTAssertThrowsError(try LlamaConfig.load(url)) {
            XCTAssertTrue("\($0)".contains("rope_local_base_freq: must be a number above 1"), "\($0)")
        }
    }

    /// Both forms of a Gemma 3 config read to the same model: layer kinds from `layer_types` or
    /// `sliding_window_pattern`, the local base from `rope_parameters.sliding_attention` or `rope_local_base_freq`.
    func testGemma3ConfigForms() throws {
        let v5 = try LlamaConfig.load(Self.fixtures.appendingPathComponent("gemma3/config.json"))
        let v4 = try LlamaConfig.load(Self.fixtures.appendingPathComponent("gemma3_v4/config.json"))
        for c in [v5, v4] {
            XCTAssertEqual(c.layerTypes, [.sliding, .full, .sliding])
            XCTAssertEqual(c.localRopeTheta, 1e4)
            XCTAssertEqual(c.ropeTheta, 1e6)
            XCTAssertEqual(c.ropeScaling?.kind, .linear)
            XCTAssertEqual(c.slidingWindow, 16)
            XCTAssertEqual(c.attentionScale, 1 / Float(20).squareRoot())
            XCTAssertEqual(c.activation, .geluTanh)
            XCTAssertEqual(c.globalWindow, nil)
        }
        // Gemma 3's config.json files leave tie_word_embeddings out: Gemma3TextConfig's default (tied) applies.
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixtures
            .appendingPathComponent("gemma3/config.json"))) as! [String: Any]
        json["tie_word_embeddings"] = nil
        let untold = try JSONDecoder().decode(LlamaConfig.self, from: JSONSerialization.data(withJSONObject: json))
        XCTAssertTrue(untold.tieWordEmbeddings)
        // What LongTune writes reads back the same.
        let reread = try JSONDecoder().decode(LlamaConfig.self, from: JSONEncoder().encode(v4))
        XCTAssertEqual(reread, v4)
    }
}
