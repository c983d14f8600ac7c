import Adapters
import Engine
import Llama

/// The FLOPs a training step performs per token, counted from the shapes alone (nothing is
/// allocated): every matmul is 2·m·n·k. `bench train` reports the achieved rate with it and
/// `longtune plan` predicts the time of a step from it.
public struct FlopCount {
    public let perToken: Double
    /// The part of `perToken` in the fused attention (its forwards and backward), which runs at its own rate.
    public let attentionPerToken: Double
    public let explanation: String

    public init(config c: LlamaConfig, lora: LoRAConfig, context t: Int, attention mode: AttentionMode,
                checkpointing: Bool) throws {
        let model = LlamaForCausalLM(config: c)
        let projections = model.modules().compactMap { $0 as? Linear }.filter { $0 !== model.lm_head }
        let linear = 2 * projections.reduce(0.0) { $0 + Double($1.inFeatures * $1.outFeatures) }   // forward, per token
        let loraParams = try model.loraTargets(lora.targets).reduce(0.0) {
            $0 + Double(lora.rank * ($1.inFeatures + $1.outFeatures))
        }
        let loraFlops = 2 * loraParams                                             // forward, per token
        let head = 2 * Double(c.vocabSize * c.hiddenSize)
        let attnFwd = 4 * (try model.keptScores(length: t, attention: mode)) * Double(c.headDim) / Double(t)
        let forwards = checkpointing ? 2.0 : 1.0
        // Frozen base: backward computes input gradients only (one matmul per linear); LoRA and the
        // trained head/embeddings also their weight gradients; attention backward is 10·d per score.
        let headTrains = model.extraModules(lora.trainable).contains {
            $0 === model.lm_head || (c.tieWordEmbeddings && $0 is Embedding)
        }
        attentionPerToken = forwards * attnFwd + attnFwd * 2.5
        perToken = forwards * (linear + loraFlops) + linear + 2 * loraFlops + head * (headTrains ? 3 : 2)
            + attentionPerToken
        explanation = "linear layers \(forwards == 2 ? "2 forwards (checkpoint recompute)" : "1 forward") "
            + "+ input-gradient backward; LoRA forward(s) + 2× backward; "
            + "LM head forward + dh\(headTrains ? " + dW" : ""); "
            + "attention 4·d per kept score per forward + 10·d backward"
    }
}
