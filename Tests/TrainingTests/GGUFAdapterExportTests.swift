import Engine
import Formats
import Foundation
import Training
import TestSupport
import XCTest

/// export-gguf --adapter: convert_lora_to_gguf.py's layout, which llama.cpp's --lora applies to the base's GGUF
/// (Tools/reference/check_gguf_llama_cpp.py checks the text llama.cpp generates with it).
final class GGUFAdapterExportTests: XCTestCase {
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("gguf-adapter") }
    override func tearDown() { tmp.remove() }

    func train(_ extra: [String], dir: String) throws -> URL {
        let r = try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "training.steps=4", "model.context_length=64", "logging.eval_every=0",
            "checkpoints.dir=\(tmp.path(dir).path)"] + extra)
        try Trainer(recipe: r, log: { _ in }).run()
        return tmp.path("\(dir)/latest")
    }

    func testAdapterHoldsTheLoRAMatricesInLlamaCppOrder() throws {
        let ck = try train(["adapter.trainable=[]", "adapter.alpha=24"], dir: "lora")
        let out = tmp.path("adapter.gguf")
        let report = try GGUFExport.runAdapter(checkpoint: ck, out: out, type: .f32)
        let file = try GGUFFile(out), loaded = try Checkpoint.read(ck)
        XCTAssertEqual(file.metadata["general.type"]?.string, "adapter")
        XCTAssertEqual(file.metadata["adapter.type"]?.string, "lora")
        XCTAssertEqual(file.metadata["adapter.lora.alpha"]?.double, 24)
        XCTAssertEqual(report.tensors, loaded.state.trainable.count)
        let config = report.config
        let a = try loaded.tensors.tensor("model.layers.1.self_attn.q_proj.lora_A.weight")
        let b = try loaded.tensors.tensor("model.layers.1.self_attn.q_proj.lora_B.weight")
        XCTAssertEqual(try file.tensor("blk.1.attn_q.weight.lora_a").array, a.array)
        // B's rows follow the q weight's rows into llama.cpp's order (GGUF row rowSource[r] is HF row r).
        let stored = try file.tensor("blk.1.attn_q.weight.lora_b"), cols = b.shape[1]
        for (hf, gguf) in GGUFImport.hfRowSource(rows: b.shape[0], heads: config.numAttentionHeads).enumerated() {
            XCTAssertEqual(stored.array[(gguf * cols)..<(gguf * cols + cols)], b.array[(hf * cols)..<(hf * cols + cols)])
        }
        XCTAssertNotEqual(stored.array, b.array, "the permutation moved rows")
        XCTAssertEqual(try file.tensor("blk.0.attn_v.weight.lora_b").array,
                       try loaded.tensors.tensor("model.layers.0.self_attn.v_proj.lora_B.weight").array)
        // The tiny recipe trains with linear RoPE ×2, which an adapter cannot carry: the note gives llama.cpp's flags.
        XCTAssertTrue(report.notes.contains { $0.contains("--rope-scaling linear --rope-scale 2") }, "\(report.notes)")
    }

    func testAdapterRefusesTrainedExtrasAndBaseWithoutTokenizer() throws {
        let ck = try train([], dir: "extras")   // the tiny recipe trains embeddings and norms too
        XCTAssertThrowsError(try GGUFExport.runAdapter(checkpoint: ck, out: tmp.path("a.gguf"), type: .f16)) {
            XCTAssertTrue("\($0)".contains("export the merged model"), "\($0)")
        }
        // A built-in base has no tokenizer, which a model GGUF needs.
        XCTAssertThrowsError(try GGUFExport.run(source: ck, out: tmp.path("m.gguf"), type: .f16)) {
            XCTAssertTrue("\($0)".contains("no tokenizer"), "\($0)")
        }
        XCTAssertThrowsError(try GGUFExport.runAdapter(checkpoint: ck, out: tmp.path("q.gguf"), type: .q4_k_m)) {
            XCTAssertTrue("\($0)".contains("f32, f16, bf16 or q8_0"), "\($0)")
        }
        let written = try FileManager.default.contentsOfDirectory(atPath: tmp.url.path).filter { $0.hasSuffix(".gguf") }
        XCTAssertEqual(written, [])
    }
}
