import Adapters
import Engine
import Foundation
import Llama
import Training
import XCTest

/// A packed SFT row (docs/CONVENTIONS.md §21) trains what its samples train one by one: its loss is their losses
/// weighted by trained targets, its LoRA and norm gradients likewise; the EOS padding contributes nothing.
final class SFTPackedTrainingTests: XCTestCase {
    func testPackedRowTrainsWhatTheSamplesTrainOneByOne() throws {
        let model = try BuiltinModels.make("tiny", seed: 3)
        var cfg = LoRAConfig()
        cfg.targets = model.projectionTargets
        let lora = try LoRAModel(model, config: cfg, seed: 4)
        for (_, a) in lora.adapters { for i in 0..<a.lora_B.value.count { a.lora_B.value.data[i] = 0.01 * Float(i % 7) } }

        func sample(_ n: Int, prompt: Int, salt: Int) -> (ids: [Int32], labels: [Int32]) {
            let ids = (0..<n).map { Int32(($0 * 37 + salt) % 256) }
            return (ids, ids.enumerated().map { $0.offset < prompt ? -100 : $0.element })
        }
        let a = sample(20, prompt: 12, salt: 5), b = sample(15, prompt: 9, salt: 91)
        let pad = 5
        let row = a.ids + b.ids + [Int32](repeating: 2, count: pad)
        let rowLabels = a.labels + b.labels + [Int32](repeating: -100, count: pad)

        func step(_ ids: [Int32], _ labels: [Int32], _ starts: [Int]?) throws -> (loss: Double, grads: [Float], n: Int) {
            for (_, p) in lora.trainableParameters { p.zeroGrad() }
            let loss = try TrainingStep.run(lora, ids: ids, labels: labels, documentStarts: starts, attention: .full,
                                            checkpointLayers: false)
            let n = try CausalLM.targets(ids: ids, labels: labels, documentStarts: starts).filter { $0 != -100 }.count
            return (Double(loss), lora.trainableParameters.flatMap { $0.1.grad?.array ?? [] }, n)
        }
        let packed = try step(row, rowLabels, [0, 20, 35])
        let one = try step(a.ids, a.labels, nil), two = try step(b.ids, b.labels, nil)
        XCTAssertEqual(packed.n, one.n + two.n)
        let w1 = Double(one.n) / Double(packed.n), w2 = Double(two.n) / Double(packed.n)
        XCTAssertEqual(packed.loss, w1 * one.loss + w2 * two.loss, accuracy: 1e-5)
        XCTAssertEqual(packed.grads.count, one.grads.count)
        var worst = 0.0
        for i in packed.grads.indices {
            worst = max(worst, abs(Double(packed.grads[i]) - (w1 * Double(one.grads[i]) + w2 * Double(two.grads[i]))))
        }
        XCTAssertLessThan(worst, 1e-5, "gradients of the packed row against the weighted samples")
        XCTAssertGreaterThan(packed.grads.map(abs).max()!, 1e-4, "the step trains something")
    }
}
