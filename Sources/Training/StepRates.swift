import Engine
import Foundation
import Llama

/// The rates a training step of a recipe runs at on this machine (docs/CONVENTIONS.md §13), probed with the step's
/// own code rather than assumed as a fraction of sgemm: the fused attention (forward, and forward + backward) on the
/// recipe's layout at the probe length, timed alone; and the rest of the step from the plan's deepest, longest memory
/// probe (its second step, timed), less that probe's attention. A step's time is its attention FLOPs at the one rate
/// plus the rest at the other, so the share of attention may grow with the context (S2 groups, full attention).
struct StepRates {
    let stepGFlops: Double
    let attentionGFlops: Double

    init(_ recipe: Recipe, config: LlamaConfig, probeSeconds: Double) throws {
        let (_, length) = try Planner.probeLengths(recipe)
        var small = config
        small.numHiddenLayers = Planner.probeLayers.1
        let checkpointing = recipe.training.activation_checkpointing
        let probe = try FlopCount(config: small, lora: recipe.adapter, context: length, attention: recipe.attentionMode,
                                  checkpointing: checkpointing)
        let layer = try Self.attentionSeconds(recipe, config: small, length: length)
        let layerSeconds = (checkpointing ? 2 : 1) * layer.forward + layer.backward
        let layers = Double(small.numHiddenLayers), tokens = Double(length)
        attentionGFlops = probe.attentionPerToken / layers * tokens / layerSeconds / 1e9
        // The rest of the probe's step; a floor keeps a noisy probe from predicting an impossible rate.
        let rest = max(probeSeconds - layers * layerSeconds, 0.1 * probeSeconds)
        stepGFlops = (probe.perToken - probe.attentionPerToken) * tokens / rest / 1e9
    }

    /// Seconds per token of a step with these FLOPs.
    func seconds(_ flops: FlopCount) -> Double {
        (flops.perToken - flops.attentionPerToken) / (stepGFlops * 1e9) + flops.attentionPerToken / (attentionGFlops * 1e9)
    }

    /// One layer's fused attention at `length` tokens, forward and backward (best of two), in the compute dtype's
    /// attention (bf16 block products where the run would use them).
    static func attentionSeconds(_ recipe: Recipe, config c: LlamaConfig,
                                 length t: Int) throws -> (forward: Double, backward: Double) {
        let layout = try LlamaForCausalLM(config: c).attentionLayout(length: t, attention: recipe.attentionMode)
        let bf16 = recipe.model.compute_dtype == .bf16 && FlashAttentionBF16.applies(headDim: c.headDim)
        var rng = SplitMix64(seed: 5)
        let q = Tensor(shape: [t, c.numAttentionHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let k = Tensor(shape: [t, c.numKeyValueHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let v = Tensor(shape: [t, c.numKeyValueHeads * c.headDim], uniform: -1, 1, rng: &rng)
        let dout = Tensor(shape: [t, c.numAttentionHeads * c.headDim], uniform: -1, 1, rng: &rng)
        func run(backward: Bool) -> Double {
            var best = Double.infinity
            for _ in 0..<2 {
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
