import Adapters
import Engine
import Foundation
import Llama

/// One forward + backward pass of a LongLoRA model on one sequence: gradients accumulate into
/// the trainable tensors' `.grad` (adapters and extras; the frozen base gets none). Layers are
/// checkpointed by default, so the saved state is one hidden-state tensor per layer, and the LM
/// head's loss is fused and chunked.
public enum TrainingStep {
    /// Returns the mean loss of the sequence (transformers' causal-LM loss: token t+1 is the
    /// target of position t; `labels` default to `ids`, −100 ignored). `lossScale` multiplies the
    /// gradients (1/accumulation steps).
    @discardableResult
    public static func run(_ lora: LoRAModel, ids: [Int32], labels: [Int32]? = nil, documentStarts: [Int]? = nil,
                           attention: AttentionMode = .full, checkpointLayers: Bool = true, lossScale: Float = 1) throws -> Float {
        let model = lora.base
        let vocab = model.config.vocabSize
        if let bad = ids.firstIndex(where: { $0 < 0 || Int($0) >= vocab }) {
            throw EngineError("token id \(ids[bad]) at position \(bad) is outside the model's vocabulary 0..<\(vocab)")
        }
        if let labels, labels.count != ids.count {
            throw EngineError("labels have \(labels.count) entries for \(ids.count) tokens")
        }
        var targets = labels ?? ids
        // Targets across a document boundary are meaningless: the first token of a document is
        // not predicted from the previous document.
        if let starts = documentStarts { for s in starts where s > 0 { targets[s] = -100 } }
        let ctx = try model.context(length: ids.count, documentStarts: documentStarts, attention: attention,
                                    checkpointLayers: checkpointLayers)
        let g = Graph()
        let loss = model.loss(g, ids: ids, labels: targets, context: ctx)
        g.backward(loss, seed: Tensor(shape: [1], [lossScale]))
        return loss.value[0]
    }
}
