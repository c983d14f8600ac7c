import Adapters
import Engine
import Foundation
import Llama

/// One sequence's forward and backward pass: the loss, and gradients accumulated into the
/// trainable tensors' `.grad` (adapters and extras; the frozen base gets none). Layers are
/// checkpointed by default, so the saved state is one hidden-state tensor per layer, and the LM
/// head's loss is fused and chunked.
public enum TrainingStep {
    /// Returns the mean loss of the sequence over `CausalLM.targets` (with a `share`, sequence parallelism: this
    /// rank's part of it, docs/CONVENTIONS.md §17). `lossScale` multiplies the
    /// gradients (1 / sequences per optimizer step). `afterForward` runs between the passes and
    /// `afterBackwardStep` after each backward step (`longtune plan` reads the memory peaks there).
    @discardableResult
    public static func run(_ lora: LoRAModel, ids: [Int32], labels: [Int32]? = nil, documentStarts: [Int]? = nil,
                           attention: AttentionMode = .full, checkpointLayers: Bool = true,
                           share: SequenceShare? = nil, lossScale: Float = 1, afterForward: () -> Void = {},
                           afterBackwardStep: (Int) -> Void = { _ in }) throws -> Float {
        let model = lora.base
        let ctx = try model.context(length: ids.count, documentStarts: documentStarts, attention: attention,
                                    checkpointLayers: checkpointLayers, share: share)
        let g = Graph(firstRow: share?.rows.lowerBound ?? 0)   // dropout masks are those of the whole sequence
        let loss = try model.loss(g, ids: ids, labels: labels, documentStarts: documentStarts, context: ctx)
        afterForward()
        g.backward(loss, seed: Tensor(shape: [1], [lossScale]), afterStep: afterBackwardStep)
        return loss.value[0]
    }
}
