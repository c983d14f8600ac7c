import Engine
import Foundation
import Llama

/// The rates a training step of a recipe runs at on this machine (docs/CONVENTIONS.md §13), probed with the step's
/// own code rather than assumed as a fraction of sgemm: the fused attention (forward, and forward + backward) on
/// blocks like the run's (`attentionLayout`), timed alone; and the rest of the step from the plan's deepest, longest
/// memory probe (its second step, timed), less that probe's attention. A step's time is its attention FLOPs at the one
/// rate plus the rest at the other, so the share of attention may grow with the context (S2 groups, full attention).
struct StepRates {
    let stepGFlops: Double
    let attentionGFlops: Double

    init(_ recipe: Recipe, config: LlamaConfig, probeSeconds: Double) throws {
        let (_, length) = try Planner.probeLengths(recipe)
        let small = config.withLayers(Planner.probeLayers.1)
        let forwards = recipe.training.activation_checkpointing ? 2.0 : 1.0
        let layout = try Self.attentionLayout(recipe, config: config)
        let time = Self.attentionSeconds(recipe, config: config, layout: layout)
        attentionGFlops = layout.keptScores * Double(config.headDim) * (4 * forwards + 10)
            / (forwards * time.forward + time.backward) / 1e9
        let probe = try FlopCount(config: small, lora: recipe.adapter, context: length, attention: recipe.attentionMode,
                                  checkpointing: recipe.training.activation_checkpointing)
        let tokens = Double(length)
        // The rest of the probe's step; a floor keeps a noisy probe from predicting an impossible rate.
        let rest = max(probeSeconds - probe.attentionPerToken * tokens / (attentionGFlops * 1e9), 0.1 * probeSeconds)
        stepGFlops = (probe.perToken - probe.attentionPerToken) * tokens / rest / 1e9
    }

    /// Seconds per token of a step with these FLOPs.
    func seconds(_ flops: FlopCount) -> Double {
        (flops.perToken - flops.attentionPerToken) / (stepGFlops * 1e9)
            + flops.attentionPerToken / (attentionGFlops * 1e9)
    }

    /// The layout the attention probe times: the run's own blocks at a length that takes seconds, not minutes. Full
    /// attention: causal over min(context, 4096) tokens. S2: two groups of the run's group size (at most 4096 tokens
    /// each), shifted heads included. S2's roll variant: its layout at min(context, 4096).
    static func attentionLayout(_ recipe: Recipe, config c: LlamaConfig) throws -> AttentionLayout {
        let t = recipe.model.context_length, model = LlamaForCausalLM(config: c)
        guard case .s2(let ratio, roll: false) = recipe.attentionMode else {
            return try model.attentionLayout(length: min(t, 4096), attention: recipe.attentionMode)
        }
        let group = min(try AttentionLayout.s2GroupSize(length: t, ratio: ratio), 4096)
        return try AttentionLayout.shiftedShort(length: min(t, 2 * group), heads: c.numAttentionHeads, groupSize: group)
    }

    /// One layer's fused attention over `layout`, forward and backward (best of three), in the compute dtype's
    /// attention (bf16 block products where the run would use them).
    static func attentionSeconds(_ recipe: Recipe, config c: LlamaConfig,
                                 layout: AttentionLayout) -> (forward: Double, backward: Double) {
        let bf16 = recipe.model.compute_dtype == .bf16 && FlashAttentionBF16.applies(headDim: c.headDim)
        let t = layout.length
        var rng = SplitMix64(seed: 5)
        let q = Tensor(shape: [t, c.numAttentionHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let k = Tensor(shape: [t, c.numKeyValueHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let v = Tensor(shape: [t, c.numKeyValueHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let dout = Tensor(shape: [t, c.numAttentionHeads * c.headDim], uniform: -1, 1, rng: &rng)
        func run(backward: Bool) -> Double {
            var best = Double.infinity
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                let g = Graph(recording: backward)
                let y = g.attention(q: Variable(q, requiresGrad: true), k: Variable(k, requiresGrad: true),
                                    v: Variable(v, requiresGrad: true), heads: c.numAttentionHeads,
                                    kvHeads: c.numKeyValueHeads, headDim: c.headDim, layout: layout, bf16: bf16)
                if backward { g.backward(y, seed: dout) }
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
            }
            return best
        }
        let forward = run(backward: false)
        return (forward, max(run(backward: true) - forward, 0))
    }
}
