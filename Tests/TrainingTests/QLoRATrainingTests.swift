import Adapters
import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// A QLoRA run (model.quantization: nf4) end to end: exact resume, and the two merges
/// (docs/CONVENTIONS.md §14): into the dequantized base it trained on, or into the original weights.
final class QLoRATrainingTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("qlora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func recipe(dir: String, _ extra: [String] = []) throws -> Recipe {
        try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "model.quantization=nf4", "training.steps=6", "checkpoints.every=3", "checkpoints.keep=5",
            "model.context_length=64", "logging.eval_every=0", "checkpoints.dir=\(tmp.appendingPathComponent(dir).path)",
        ] + extra)
    }

    func testAQLoRARunResumesBitwise() throws {
        try Trainer(recipe: try recipe(dir: "a"), log: { _ in }).run()
        let half = try Trainer(recipe: try recipe(dir: "b"), resume: tmp.appendingPathComponent("a/step-000003").path,
                               log: { _ in })
        try half.run()
        let a = try Checkpoint.read(tmp.appendingPathComponent("a/latest"))
        let b = try Checkpoint.read(tmp.appendingPathComponent("b/latest"))
        XCTAssertEqual(a.state.recipe.model.quantization, .nf4)
        for name in a.tensors.names {
            XCTAssertEqual(try a.tensors.tensor(name).array, try b.tensors.tensor(name).array, "\(name) differs after resume")
        }
    }

    func testMergingIntoTheQuantizedBaseReproducesTheQLoRAModel() throws {
        try Trainer(recipe: try recipe(dir: "run"), log: { _ in }).run()
        let ck = tmp.appendingPathComponent("run/latest")
        let ids = (0..<48).map { Int32(($0 * 29 + 3) % 256) }
        let qlora = try Checkpoint.trainedModel(ck).1.base.logits(ids: ids).array
        var logits: [Bool: [Float]] = [:]
        for fromQuantized in [true, false] {
            let out = tmp.appendingPathComponent("merged-\(fromQuantized)")
            _ = try Merge.run(checkpoint: ck, out: out, dtype: .fp32, fromQuantized: fromQuantized)
            logits[fromQuantized] = try LlamaForCausalLM(directory: try ModelDirectory(out)).logits(ids: ids).array
        }
        // Merged into the dequantized NF4 weights: the model the adapter was trained with.
        assertClose(logits[true]!, qlora, atol: 2e-5, rtol: 1e-5, "merge --from-quantized vs the QLoRA model")
        // Merged into the original fp32 weights: another model.
        XCTAssertGreaterThan(relativeDifference(logits[false]!, qlora), 1e-4)
    }

    func testFromQuantizedNeedsAQuantizedRun() throws {
        try Trainer(recipe: try recipe(dir: "fp32", ["model.quantization=none"]), log: { _ in }).run()
        expectError(["--from-quantized", "model.quantization: none"]) {
            _ = try Merge.run(checkpoint: self.tmp.appendingPathComponent("fp32/latest"),
                              out: self.tmp.appendingPathComponent("m"), dtype: .fp32, fromQuantized: true)
        }
    }
}
