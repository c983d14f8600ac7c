import Adapters
import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// Merged models reproduce base + adapter; the peft export has peft's names and config.
final class MergeTests: XCTestCase {
    var tmp: URL!
    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("merge-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func trainedCheckpoint() throws -> URL {
        let r = try Recipe.load(TrainerTests.tinyRecipe, overrides: ["training.steps=4", "model.context_length=64", "logging.eval_every=0",
                                                                     "checkpoints.dir=\(tmp.appendingPathComponent("run").path)"])
        try Trainer(recipe: r, log: { _ in }).run()
        return tmp.appendingPathComponent("run/latest")
    }

    func testMergedLogitsEqualBasePlusAdapter() throws {
        let ck = try trainedCheckpoint()
        let (_, lora) = try Checkpoint.trainedModel(ck)
        let ids: [Int32] = (0..<40).map { Int32(($0 * 37) % 256) }
        let reference = try lora.base.logits(ids: ids).array      // adapters attached, extras trained
        for (dtype, tol) in [(DType.fp32, Float(1e-5)), (.fp16, 1e-2)] {
            let out = tmp.appendingPathComponent("merged-\(dtype)")
            _ = try Merge.run(checkpoint: ck, out: out, dtype: dtype)
            let merged = try LlamaForCausalLM(directory: try ModelDirectory(out))
            var worst: Float = 0
            for (a, b) in zip(try merged.logits(ids: ids).array, reference) { worst = max(worst, abs(a - b)) }
            XCTAssertLessThanOrEqual(worst, tol, "\(dtype) merged logits differ by \(worst)")
            // The trained context and RoPE scaling travel with the model.
            XCTAssertEqual(merged.config.maxPositionEmbeddings, 256)
            XCTAssertEqual(merged.config.ropeScaling?.kind, .linear)
            XCTAssertEqual(merged.config.ropeScaling?.factor, 2)
        }
        XCTAssertThrowsError(try Merge.run(checkpoint: ck, out: tmp.appendingPathComponent("merged-fp32"), dtype: .fp32)) {
            XCTAssertTrue("\($0)".contains("--force"), "\($0)")
        }
    }

    /// transformers has no ntk_alpha kind: the merged config is default RoPE with the NTK base, and
    /// gives the same logits.
    func testNTKAlphaMergesToDefaultRopeWithTheLargerBase() throws {
        let r = try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "training.steps=4", "model.context_length=64", "logging.eval_every=0",
            "model.rope_scaling={rope_type: ntk_alpha, alpha_value: 2.5}", "checkpoints.dir=\(tmp.appendingPathComponent("ntk").path)"])
        try Trainer(recipe: r, log: { _ in }).run()
        let ck = tmp.appendingPathComponent("ntk/latest")
        let (_, lora) = try Checkpoint.trainedModel(ck)
        let out = tmp.appendingPathComponent("merged-ntk")
        _ = try Merge.run(checkpoint: ck, out: out, dtype: .fp32)
        let merged = try LlamaForCausalLM(directory: try ModelDirectory(out))
        XCTAssertNil(merged.config.ropeScaling)
        let d = Double(lora.base.config.rotaryDim)
        XCTAssertEqual(merged.config.ropeTheta, 10000 * Foundation.pow(2.5, d / (d - 2)), accuracy: 1e-6)
        let ids: [Int32] = (0..<64).map { Int32(($0 * 29) % 256) }
        assertClose(try merged.logits(ids: ids).array, try lora.base.logits(ids: ids).array, atol: 1e-5, "merged ntk_alpha logits")
    }

    func testShardedOutputLoads() throws {
        let ck = try trainedCheckpoint()
        let out = tmp.appendingPathComponent("sharded")
        let report = try Merge.run(checkpoint: ck, out: out, dtype: .fp32, maxShardBytes: 40_000)
        XCTAssertGreaterThan(report.shards, 1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors.index.json").path))
        let merged = try LlamaForCausalLM(directory: try ModelDirectory(out))
        let single = tmp.appendingPathComponent("single")
        _ = try Merge.run(checkpoint: ck, out: single, dtype: .fp32)
        let ids: [Int32] = [1, 2, 3, 4, 5]
        XCTAssertEqual(try merged.logits(ids: ids).array, try LlamaForCausalLM(directory: try ModelDirectory(single)).logits(ids: ids).array)
    }

    func testPEFTExportNamesAndConfig() throws {
        let ck = try trainedCheckpoint()
        let out = tmp.appendingPathComponent("peft")
        try Merge.exportPEFT(checkpoint: ck, out: out)
        let st = try SafetensorsFile(out.appendingPathComponent("adapter_model.safetensors"))
        XCTAssertEqual(st.metadata["format"], "pt")
        XCTAssertTrue(st.names.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"))
        XCTAssertTrue(st.names.contains("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"))
        XCTAssertTrue(st.names.contains("base_model.model.model.embed_tokens.weight"))
        XCTAssertTrue(st.names.contains("base_model.model.model.norm.weight"))
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["peft_type"] as? String, "LORA"); XCTAssertEqual(cfg["r"] as? Int, 8)
        XCTAssertEqual(cfg["lora_alpha"] as? Double, 16); XCTAssertEqual(cfg["target_modules"] as? [String], ["q_proj", "k_proj", "v_proj", "o_proj"])
        XCTAssertEqual(cfg["modules_to_save"] as? [String], ["embed_tokens", "input_layernorm", "post_attention_layernorm", "norm"])
    }
}

/// A LongTune checkpoint merged here gives the logits transformers computed from the same merge
/// (fixture from Tools/reference/make_interop_fixture.py, which also checked that peft loads the
/// exported adapter onto the base and agrees with the merged model).
final class MergeInteropTests: XCTestCase {
    func testMergedModelMatchesTransformersOnTheSameMerge() throws { try check("interop", base: "lora/base") }
    func testMergedQwen3MatchesTransformersOnTheSameMerge() throws { try check("interop_qwen3", base: "lora_qwen3/base") }
    /// Phi-3: LoRA on the fused qkv_proj and gate_up_proj, longrope (Phi3Config reads yarn as longrope).
    func testMergedPhi3MatchesTransformersOnTheSameMerge() throws {
        try check("interop_phi3", base: "lora_phi3/base", scaling: .longrope)
    }

    /// Gemma 3: linear scaling on the global layer; the merged config in both forms (v5 per layer type).
    func testMergedGemma3MatchesTransformersOnTheSameMerge() throws {
        try check("interop_gemma3", base: "lora_gemma3/base", scaling: .linear)
    }

    func check(_ fixture: String, base: String, scaling: RopeScaling.Kind = .yarn) throws {
        let fx = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(fixture)
        let base = TrainerTests.repo.appendingPathComponent("Tests/LlamaTests/Fixtures/\(base)").path
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("interop-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        _ = try Merge.run(checkpoint: fx.appendingPathComponent("checkpoint"), out: out, dtype: .fp32, base: base)
        let merged = try LlamaForCausalLM(directory: try ModelDirectory(out))
        XCTAssertEqual(merged.config.ropeScaling?.kind, scaling)
        XCTAssertEqual(merged.config.maxPositionEmbeddings, 256)
        let expected = try SafetensorsFile(fx.appendingPathComponent("expected.safetensors"))
        let ids = try expected.tensor("input_ids").array.map { Int32($0) }
        let ours = try merged.logits(ids: ids).array, theirs = try expected.tensor("logits").array
        var worst: Float = 0
        for (a, b) in zip(ours, theirs) { worst = max(worst, abs(a - b)) }
        XCTAssertLessThanOrEqual(worst, 1e-4, "merged logits differ from transformers' by \(worst)")
    }
}
