import Engine
import Formats
import Foundation
import Llama
import TestSupport
import XCTest

/// import-gguf against transformers' GGUF loader (fixture from Tools/reference/make_gguf_fixture.py:
/// Q8_0, Q4_0, Q4_1, F16, BF16 and F32 tensors, permuted q/k rows, byte-level BPE metadata).
final class GGUFImportTests: XCTestCase {
    let fixture = TransformersGoldenTests.fixtures.appendingPathComponent("gguf")
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-\(getpid())")

    func testImportedModelMatchesTransformersGGUFLoader() throws {
        try GGUFImport.run(try GGUFFile(fixture.appendingPathComponent("tiny.gguf")), to: out)
        let model = try LlamaForCausalLM(directory: try ModelDirectory(out))
        XCTAssertTrue(model.config.tieWordEmbeddings)
        let expected = try SafetensorsFile(fixture.appendingPathComponent("expected.safetensors"))
        let ids = try expected.tensor("input_ids").array.map { Int32($0) }
        assertClose(try model.logits(ids: ids).array, try expected.tensor("logits").array, atol: 1e-4, "logits")
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: fixture.appendingPathComponent("expected.json"))) as! [String: Double]
        let loss = try model.loss(Graph(recording: false), ids: ids, context: try model.context(length: ids.count)).value[0]
        XCTAssertEqual(Double(loss), info["loss"]!, accuracy: 1e-4)

        let tok = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        let bpe = tok["model"] as! [String: Any]
        XCTAssertEqual((bpe["vocab"] as! [String: Int]).count, 300)
        XCTAssertEqual((bpe["merges"] as! [[String]]).first, ["Ġ", "t"])
        let added = tok["added_tokens"] as! [[String: Any]]
        XCTAssertEqual(added.map { $0["content"] as! String }, ["<|endoftext|>"])
    }

    func testTruncatedFileIsAClearError() throws {
        let data = try Data(contentsOf: fixture.appendingPathComponent("tiny.gguf"))
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let cut = out.appendingPathComponent("cut.gguf")
        try data.prefix(data.count - 1000).write(to: cut)
        XCTAssertThrowsError(try GGUFFile(cut)) { XCTAssertTrue("\($0)".contains("past the end"), "\($0)") }
        try data.prefix(100).write(to: cut)
        XCTAssertThrowsError(try GGUFFile(cut)) { XCTAssertTrue("\($0)".contains("truncated"), "\($0)") }
        try Data("not a gguf file at all".utf8).write(to: cut)
        XCTAssertThrowsError(try GGUFFile(cut)) { XCTAssertTrue("\($0)".contains("magic"), "\($0)") }
    }

    /// `qwen2`, `qwen3`, `phi3` and `gemma3` files (Tools/reference/make_gguf_family_fixtures.py: the fixture
    /// directories' weights, HF q/k row order, Qwen2's biases, Qwen3's attn_q_norm/attn_k_norm and head_dim as
    /// key_length, YaRN metadata; Phi-3's fused attn_qkv/ffn_up, rotary share, window and longrope factor tensors;
    /// Gemma 3's 1 + w norms, its four norms per block, window and per-layer pattern) import to models whose
    /// logits are transformers' for those directories (Phi-3's with its 48-token window, which llama.cpp ignores); the
    /// same when a file is loaded directly.
    func testFamilyFilesImportToTheTransformersModels() throws {
        let families: [(String, String, Int, RopeScaling.Kind?)] = [
            ("qwen2", "Qwen2ForCausalLM", 16, nil), ("qwen3", "Qwen3ForCausalLM", 32, .yarn),
            ("phi3", "Phi3ForCausalLM", 16, .longrope), ("gemma3", "Gemma3ForCausalLM", 24, .linear)]
        for (family, architecture, headDim, scaling) in families {
            let gguf = try GGUFFile(TransformersGoldenTests.fixtures.appendingPathComponent(
                "gguf_families/tiny-\(family).gguf"))
            // Gemma 3: transformers with the score scale llama.cpp derives (query_pre_attn_scalar = head_dim).
            let reference = family == "gemma3" ? "gguf_families/gemma3-expected" : "\(family)/expected"
            let expected = try SafetensorsFile(
                TransformersGoldenTests.fixtures.appendingPathComponent("\(reference).safetensors"))
            let ids = try expected.tensor("input_ids").array.map { Int32($0) }
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-\(family)-\(UUID().uuidString)")
            try GGUFImport.run(gguf, to: dir)
            defer { try? FileManager.default.removeItem(at: dir) }
            let imported = try LlamaForCausalLM(directory: try ModelDirectory(dir))
            XCTAssertEqual(imported.config.architectures, [architecture])
            XCTAssertEqual(imported.config.headDim, headDim)
            XCTAssertEqual(imported.config.ropeScaling?.kind, scaling)
            for model in [imported, try LlamaForCausalLM(gguf: gguf)] {
                assertClose(try model.logits(ids: ids).array, try expected.tensor("logits").array, atol: 1e-4,
                            "\(family) logits")
            }
        }
    }

    func testUnsupportedArchitectureNamesTheSupportedOnes() throws {
        let url = TransformersGoldenTests.fixtures.appendingPathComponent("gguf_families/tiny-qwen3.gguf")
        var data = try Data(contentsOf: url)
        let at = data.range(of: Data("qwen3".utf8))!   // general.architecture's value comes first
        data.replaceSubrange(at, with: Data("gemma".utf8))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gemma-\(UUID().uuidString).gguf")
        defer { try? FileManager.default.removeItem(at: file) }
        try data.write(to: file)
        XCTAssertThrowsError(try GGUFImport.config(from: try GGUFFile(file))) {
            XCTAssertTrue("\($0)".contains("\"gemma\"") && "\($0)".contains("llama, phi3, qwen2, qwen3"), "\($0)")
        }
    }
}
