import Adapters
import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// QLoRA (docs/CONVENTIONS.md §14): LoRA on a base whose projections are stored in NF4 trains exactly as
/// on the fp32 base those NF4 weights dequantize to.
final class QLoRATests: XCTestCase {
    let base = TransformersGoldenTests.fixtures.appendingPathComponent("lora/base")

    /// The LongLoRA fixture's adapter start (B ≠ 0, so the base's gradient path matters).
    func adapted(_ model: LlamaForCausalLM) throws -> LoRAModel {
        var cfg = LoRAConfig(); cfg.rank = 4; cfg.alpha = 8
        let lora = try LoRAModel(model, config: cfg, seed: 1)
        let start = try SafetensorsFile(base.deletingLastPathComponent().appendingPathComponent("adapter_start.safetensors"))
        for (n, p) in lora.trainableParameters { p.value = try start.tensor(n) }
        return lora
    }

    func testGradientsOnAnNF4BaseEqualThoseOnItsDequantizedBase() throws {
        for double in [true, false] {
            let quantized = try LlamaForCausalLM(directory: try ModelDirectory(base),
                                                 quantization: Quantization(doubleQuant: double))
            let dense = try LlamaForCausalLM(directory: try ModelDirectory(base))
            let original = try LlamaForCausalLM(directory: try ModelDirectory(base))
            for (q, d) in zip(quantized.quantizableLinears, dense.quantizableLinears) {
                XCTAssertEqual(q.quantized?.kind, double ? "nf4+dq" : "nf4")
                XCTAssertFalse(q.parameters.contains { $0.0 == q.path + ".weight" }, "a quantized weight is no parameter")
                d.weight.value = q.quantized!.dequantized()
            }
            let ids = (0..<64).map { Int32(($0 * 37 + 11) % quantized.config.vocabSize) }
            var losses: [Float] = [], grads: [[(String, [Float])]] = []
            for model in [quantized, dense, original] {
                let lora = try adapted(model)
                losses.append(try TrainingStep.run(lora, ids: ids, documentStarts: nil,
                                                   attention: .s2(groupRatio: 0.25, roll: false), checkpointLayers: true))
                grads.append(lora.trainableParameters.map { ($0.0, $0.1.grad!.array) })
            }
            XCTAssertEqual(losses[0], losses[1], accuracy: 1e-6)
            for ((n, a), (_, b)) in zip(grads[0], grads[1]) { assertClose(a, b, atol: 1e-5, "nf4 vs dequantized: \(n)") }
            // Quantizing changed the model: the loss on the original weights differs.
            XCTAssertGreaterThan(abs(losses[0] - losses[2]), 1e-4, "quantization should change the loss")
        }
    }

    func testAQuantizedBuiltinEqualsQuantizingItsFP32Weights() throws {
        let q = Quantization(doubleQuant: true)
        let quantized = try BuiltinModels.make("tiny", seed: 3, quantization: q)
        let dense = try BuiltinModels.make("tiny", seed: 3)
        for (a, b) in zip(quantized.quantizableLinears, dense.quantizableLinears) {
            let expected = try q.quantize(b.weight.value, name: b.path)
            XCTAssertEqual((a.quantized as? NF4Matrix)?.packed, expected.packed, a.path)
        }
        XCTAssertEqual(quantized.model.norm.weight.value.array, dense.model.norm.weight.value.array)
        let bf16 = dense.model.embed_tokens.weight.value.copy()
        roundTrip(bf16, through: .bf16)
        XCTAssertEqual(quantized.model.embed_tokens.frozen16?.widened().array, bf16.array, "drawn as a bf16 checkpoint")
    }

    /// A tied embedding kept in bf16 is also the LM head: logits, per-token losses, the training loss and its
    /// gradients equal those of the same model with the table widened to fp32 (the tiny model's 256-token
    /// vocabulary is one block; HeadWeight's own test covers several).
    func testATiedBF16TableServesAsTheLMHead() throws {
        let model = try BuiltinModels.make("tiny", seed: 3, quantization: Quantization())
        XCTAssertTrue(model.config.tieWordEmbeddings)
        let table = try XCTUnwrap(model.model.embed_tokens.frozen16)
        let ids = (0..<40).map { Int32(($0 * 37 + 5) % 256) }
        func measure() throws -> ([Float], [Double], Float, [Float]) {
            let lora = try LoRAModel(model, config: { var c = LoRAConfig(); c.trainable = []; return c }(), seed: 1)
            for (_, a) in lora.adapters { a.lora_B.value.fill(0.01) }
            let loss = try TrainingStep.run(lora, ids: ids, checkpointLayers: true)
            let grads = lora.trainableParameters.flatMap { $0.1.grad!.array }
            for (_, p) in lora.trainableParameters { p.zeroGrad() }
            return (try model.logits(ids: ids).array, try model.tokenLosses(ids: ids, context: try model.context(length: 40)),
                    loss, grads)
        }
        let frozen = try measure()
        XCTAssertFalse(model.namedParameters().contains { $0.0 == "model.embed_tokens.weight" })
        model.model.embed_tokens.widenToFP32()
        XCTAssertEqual(model.model.embed_tokens.weight.value.array, table.widened().array)
        let widened = try measure()
        assertClose(frozen.0, widened.0, atol: 1e-6, rtol: 1e-6, "logits")
        for (a, b) in zip(frozen.1, widened.1) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        XCTAssertEqual(frozen.2, widened.2, accuracy: 1e-6)
        assertClose(frozen.3, widened.3, atol: 1e-7, rtol: 1e-5, "LoRA gradients")
    }

    /// An untied fp16 embedding stays in fp16 on a quantized base (lossless: the same logits as widened), and
    /// widens to fp32 when it is trained.
    func testAQuantizedBaseKeepsItsUntiedEmbeddingIn16Bits() throws {
        let dir = TransformersGoldenTests.fixtures.appendingPathComponent("bnb/fp16")
        let model = try LlamaForCausalLM(directory: try ModelDirectory(dir), quantization: Quantization())
        let embed = model.model.embed_tokens
        XCTAssertEqual(embed.frozen16?.dtype, .fp16)
        XCTAssertFalse(model.namedParameters().contains { $0.0 == "model.embed_tokens.weight" })
        let ids = (0..<32).map { Int32(($0 * 13 + 2) % 97) }
        let kept = try model.logits(ids: ids).array
        embed.widenToFP32()
        XCTAssertEqual(try model.logits(ids: ids).array, kept)

        let again = try LlamaForCausalLM(directory: try ModelDirectory(dir), quantization: Quantization())
        var cfg = LoRAConfig(); cfg.trainable = [.embed_tokens]
        let lora = try LoRAModel(again, config: cfg, seed: 1)
        XCTAssertNil(again.model.embed_tokens.frozen16)
        XCTAssertEqual(lora.extras.map(\.0), ["model.embed_tokens.weight"])
        XCTAssertEqual(lora.extras[0].1.value.array, embed.weight.value.array)
    }
}
