import Adapters
import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// GGUF block types (docs/CONVENTIONS.md §9) against the `gguf` package's dequantize
/// (Tools/reference/make_gguf_quant_fixtures.py), and a GGUF file as a frozen base kept in its blocks (§14).
final class GGUFQuantizedTests: XCTestCase {
    let gguf = TransformersGoldenTests.fixtures.appendingPathComponent("gguf")

    func testEveryBlockTypeDequantizesAsTheGGUFPackage() throws {
        let f = try SafetensorsFile(TransformersGoldenTests.fixtures.appendingPathComponent("gguf_quants/quants.safetensors"))
        let types = Set(f.names.map { String($0.split(separator: ".")[0]) })
        XCTAssertEqual(types, ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
        for name in types.sorted() {
            let (type, layout) = GGUFFile.layouts.first { $0.value.name == name }!
            let raw = try f.rawBytes("\(name).raw"), expected = try f.tensor("\(name).values").array
            var values = [Float](repeating: .nan, count: expected.count)
            raw.withUnsafeBytes { p in
                for b in 0..<(raw.count / layout.bytes) {
                    GGUFFile.dequantize(type: type, p.baseAddress! + b * layout.bytes, &values[b * layout.block])
                }
            }
            XCTAssertEqual(values, expected, name)
        }
    }

    /// The file's Q8_0/Q4_0/Q4_1 projections stay in their blocks, and the model equals transformers' GGUF
    /// loader (which dequantizes everything) as the imported directory does.
    func testAGGUFFileIsABaseKeptInItsBlocks() throws {
        let model = try ModelSource.load(gguf.appendingPathComponent("tiny.gguf").path)
        let kinds = Set(model.quantizableLinears.compactMap { $0.quantized?.kind })
        XCTAssertFalse(kinds.isEmpty, "the fixture's block-quantized projections should stay quantized")
        XCTAssertTrue(kinds.isSubset(of: ["Q8_0", "Q4_0", "Q4_1"]), "\(kinds)")
        let expected = try SafetensorsFile(gguf.appendingPathComponent("expected.safetensors"))
        let ids = try expected.tensor("input_ids").array.map { Int32($0) }
        assertClose(try model.logits(ids: ids).array, try expected.tensor("logits").array, atol: 1e-4, "logits")
    }

    /// `model.path: file.gguf` trains (exact resume) and merges into a directory transformers can load, whose
    /// logits equal the trained model's.
    func testTrainingOnAGGUFFileResumesAndMerges() throws {
        let tmp = try TemporaryDirectory("gguf-train")
        defer { tmp.remove() }
        func recipe(_ dir: String) throws -> Recipe {
            try Recipe.load(repositoryRoot.appendingPathComponent("recipes/tiny.yaml"), overrides: [
                "model.path=\(gguf.appendingPathComponent("tiny.gguf").path)", "model.rope_scaling=null",
                "model.context_length=64", "data.train=builtin:chain", "data.eval=null", "training.steps=6",
                "checkpoints.every=3", "checkpoints.keep=5", "logging.eval_every=0",
                "checkpoints.dir=\(tmp.path(dir).path)"])
        }
        try Trainer(recipe: try recipe("a"), log: { _ in }).run()
        try Trainer(recipe: try recipe("b"), resume: tmp.path("a/step-000003").path, log: { _ in }).run()
        let a = try Checkpoint.read(tmp.path("a/latest")), b = try Checkpoint.read(tmp.path("b/latest"))
        for name in a.tensors.names {
            XCTAssertEqual(try a.tensors.tensor(name).array, try b.tensors.tensor(name).array, "\(name) after resume")
        }
        let out = tmp.path("merged")
        _ = try Merge.run(checkpoint: tmp.path("a/latest"), out: out, dtype: .fp32)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("tokenizer.json").path))
        let ids = (0..<40).map { Int32(($0 * 7 + 1) % 300) }
        let trained = try Checkpoint.trainedModel(tmp.path("a/latest")).1.base.logits(ids: ids).array
        let merged = try LlamaForCausalLM(directory: try ModelDirectory(out)).logits(ids: ids).array
        assertClose(merged, trained, atol: 2e-5, rtol: 1e-5, "merged vs trained")
    }
}
