import Engine
import Foundation
import Formats
import TestSupport
import Training
import XCTest

/// Ten optimizer steps of the whole training loop against PyTorch (as llm.c's test_gpt2 checks its
/// optimizer steps): LoRA + trainable embeddings and norms on a tiny Llama, AdamW with two parameter
/// groups and learning rates, transformers' cosine schedule with warmup, global-norm clipping and
/// gradient accumulation 2. Fixture from Tools/reference/make_loop_fixture.py (transformers + peft).
final class TrainingLoopGoldenTests: XCTestCase {
    static let fixture = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("loop")

    func testTenStepsMatchPyTorch() throws {
        let tmp = try TemporaryDirectory("loop")
        defer { tmp.remove() }
        let expected = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.fixture.appendingPathComponent("expected.json"))) as! [String: Any]
        let recipe = tmp.path("loop.yaml")
        try """
        model: {path: \(Self.fixture.appendingPathComponent("base").path), context_length: 64}
        adapter: {rank: 4, alpha: 8, targets: [q_proj, k_proj, v_proj, o_proj], trainable: [embed_tokens, norm]}
        attention: {mode: full}
        data: {train: \(Self.fixture.appendingPathComponent("data.h5").path), shuffle: false}
        training: {steps: 10, batch_size: 1, gradient_accumulation: 2, learning_rate: 2.0e-3, extras_learning_rate: 5.0e-4,
                   schedule: cosine, warmup_steps: 3, weight_decay: 0.1, max_grad_norm: \(expected["max_grad_norm"]!)}
        checkpoints: {dir: \(tmp.path("run").path)}
        """.write(to: recipe, atomically: true, encoding: .utf8)
        let trainer = try Trainer(recipe: try Recipe.load(recipe), log: { _ in })
        let start = try SafetensorsFile(Self.fixture.appendingPathComponent("start.safetensors"))
        XCTAssertEqual(Set(trainer.lora.trainableParameters.map(\.0)), Set(start.names), "the trainable set is peft's")
        for (name, p) in trainer.lora.trainableParameters { p.value = try start.tensor(name) }
        try trainer.run()

        let steps = expected["steps"] as! [[String: Double]]
        XCTAssertEqual(trainer.metrics.count, steps.count)
        for (ours, theirs) in zip(trainer.metrics, steps) {
            let step = Int(theirs["step"]!)
            XCTAssertEqual(ours.step, step)
            XCTAssertEqual(ours.loss!, theirs["loss"]!, accuracy: 1e-5 * theirs["loss"]!, "loss at step \(step)")
            XCTAssertEqual(ours.gradNorm!, theirs["grad_norm"]!, accuracy: 1e-5 * theirs["grad_norm"]!,
                           "grad norm at step \(step)")
            XCTAssertEqual(ours.lr!, theirs["lr"]!, accuracy: 1e-12, "learning rate at step \(step)")
        }
        let final = try SafetensorsFile(Self.fixture.appendingPathComponent("final.safetensors"))
        for (name, p) in trainer.lora.trainableParameters {
            let theirs = try final.tensor(name).array
            XCTAssertLessThan(relativeDifference(p.value.array, theirs), 1e-5, "\(name) after 10 steps")
            // And the step moved it: the comparison is not with the starting values.
            XCTAssertGreaterThan(relativeDifference(try start.tensor(name).array, theirs), 1e-4, name)
        }
    }
}
