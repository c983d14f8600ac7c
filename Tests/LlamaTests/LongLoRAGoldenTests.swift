import Adapters
import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// Loss and every trainable gradient of a LongLoRA step against transformers + peft (fixture from
/// Tools/reference/make_lora_fixtures.py), for full attention, both S2-Attn variants and packed documents; on a Llama
/// model (`lora`), a Qwen3 model (`lora_qwen3`: per-head q/k norms, trainable with the other norms) and a Phi-3 model
/// (`lora_phi3`: LoRA on the fused qkv_proj and gate_up_proj, rotary on half of each head) and a Gemma 3 model
/// (`lora_gemma3`: a local layer keeping its window under S2-Attn, sandwich (1 + w) norms, GeGLU).
final class LongLoRAGoldenTests: XCTestCase {
    func run(_ name: String, attention: AttentionMode, documents: Bool, checkpointLayers: Bool = true,
             fixture: String = "lora", file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = TransformersGoldenTests.fixtures.appendingPathComponent(fixture)
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as! [String: Any]
        let model = try LlamaForCausalLM(directory: try ModelDirectory(dir.appendingPathComponent("base")))
        var cfg = LoRAConfig(); cfg.rank = 4; cfg.alpha = 8
        if let targets = info["targets"] as? [String] { cfg.targets = targets.map { LoRATarget(rawValue: $0)! } }
        let lora = try LoRAModel(model, config: cfg, seed: 1)
        let start = try SafetensorsFile(dir.appendingPathComponent("adapter_start.safetensors"))
        let trainable = lora.trainableParameters
        XCTAssertEqual(trainable.map(\.0).sorted(), info["trainable"] as! [String], file: file, line: line)
        for (n, p) in trainable { p.value = try start.tensor(n) }
        let ids = try SafetensorsFile(dir.appendingPathComponent("inputs.safetensors")).tensor("input_ids").array.map { Int32($0) }
        let loss = try TrainingStep.run(lora, ids: ids, documentStarts: documents ? (info["document_starts"] as! [Int]) : nil,
                                        attention: attention, checkpointLayers: checkpointLayers)
        XCTAssertEqual(Double(loss), (info["loss"] as! [String: Double])[name]!, accuracy: 1e-4, "\(name) loss", file: file, line: line)
        let grads = try SafetensorsFile(dir.appendingPathComponent("grads_\(name).safetensors"))
        for (n, p) in trainable {
            guard let g = p.grad else { XCTFail("\(n): no gradient", file: file, line: line); continue }
            assertClose(g.array, try grads.tensor(n).array, atol: 1e-5, rtol: 1e-4, "\(name) grad \(n)", file: file, line: line)
        }
        // The frozen base received no gradient.
        XCTAssertNil(model.model.layers[0].self_attn.o_proj.weight.grad, file: file, line: line)
        XCTAssertNil(model.model.layers[1].mlp.down_proj.weight.grad, file: file, line: line)
    }

    func testFullAttention() throws { try run("full", attention: .full, documents: false) }
    func testFullAttentionWithoutCheckpointing() throws { try run("full", attention: .full, documents: false, checkpointLayers: false) }
    func testS2Boundaries() throws { try run("s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: false) }
    func testS2Roll() throws { try run("s2_roll", attention: .s2(groupRatio: 0.25, roll: true), documents: false) }
    func testPackedDocuments() throws { try run("documents", attention: .full, documents: true) }
    func testPackedDocumentsWithS2Boundaries() throws {
        try run("documents_s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: true)
    }

    func testQwen3FullAttention() throws { try run("full", attention: .full, documents: false, fixture: "lora_qwen3") }
    func testQwen3S2Boundaries() throws {
        try run("s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: false, fixture: "lora_qwen3")
    }
    func testQwen3S2Roll() throws {
        try run("s2_roll", attention: .s2(groupRatio: 0.25, roll: true), documents: false, fixture: "lora_qwen3")
    }
    func testQwen3PackedDocumentsWithS2Boundaries() throws {
        try run("documents_s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: true,
                fixture: "lora_qwen3")
    }

    func testPhi3FullAttention() throws { try run("full", attention: .full, documents: false, fixture: "lora_phi3") }
    func testPhi3S2Roll() throws {
        try run("s2_roll", attention: .s2(groupRatio: 0.25, roll: true), documents: false, fixture: "lora_phi3")
    }
    func testPhi3PackedDocumentsWithS2Boundaries() throws {
        try run("documents_s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: true,
                fixture: "lora_phi3")
    }
    func testGemma3FullAttention() throws { try run("full", attention: .full, documents: false, fixture: "lora_gemma3") }
    func testGemma3S2Roll() throws {
        try run("s2_roll", attention: .s2(groupRatio: 0.25, roll: true), documents: false, fixture: "lora_gemma3")
    }
    func testGemma3PackedDocumentsWithS2Boundaries() throws {
        try run("documents_s2_boundaries", attention: .s2(groupRatio: 0.25, roll: false), documents: true,
                fixture: "lora_gemma3")
    }

    func testPhi3RefusesTargetsItDoesNotHave() throws {
        let model = try LlamaForCausalLM(directory: try ModelDirectory(
            TransformersGoldenTests.fixtures.appendingPathComponent("lora_phi3/base")))
        XCTAssertThrowsError(try LoRAModel(model, config: LoRAConfig(), seed: 1)) {
            XCTAssertTrue("\($0)".contains("has no q_proj; its projections are o_proj, down_proj, qkv_proj, gate_up_proj"),
                          "\($0)")
        }
    }

    func testLengthNotDivisibleByGroupIsAClearError() throws {
        let model = LlamaForCausalLM(config: LlamaConfig(vocabSize: 10, hiddenSize: 8, intermediateSize: 8, numHiddenLayers: 1,
                                                          numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 64))
        XCTAssertThrowsError(try model.context(length: 30, attention: .s2(groupRatio: 0.25, roll: false))) {
            XCTAssertTrue("\($0)".contains("multiple"), "\($0)")
        }
    }
}
