import Engine
import Foundation
import Llama
import Settings

/// LoRA (docs/CONVENTIONS.md §5, peft conventions): y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ with
/// A [r, in] and B [out, r]. A starts kaiming-uniform (a = √5, i.e. U(±1/√in)) and B at zero, so
/// the adapted model starts equal to the base.
public final class LoRALinear: LinearAdapter {
    public let lora_A: Variable
    public let lora_B: Variable
    public let scale: Float
    public let dropout: Float
    /// Seeds the dropout mask; set per step so that a checkpointed layer's recomputation draws the
    /// same mask as its first forward.
    public var dropoutSeed: UInt64 = 0
    /// Dropout applies only in training mode. It does not depend on whether the graph records:
    /// a checkpointed layer's first forward pass does not record, and must draw the same mask as
    /// its replay.
    public var training = false

    public init(adapting base: Linear, config: LoRAConfig, rng: inout SplitMix64) {
        let (inFeatures, outFeatures, rank) = (base.inFeatures, base.outFeatures, config.rank)
        let bound = 1 / Float(inFeatures).squareRoot()
        lora_A = Variable(Tensor(shape: [rank, inFeatures], uniform: -bound, bound, rng: &rng), requiresGrad: true,
                          name: base.path + ".lora_A.weight")
        lora_B = Variable(Tensor(zeros: [outFeatures, rank]), requiresGrad: true, name: base.path + ".lora_B.weight")
        scale = config.scale
        dropout = Float(config.dropout)
    }

    public var parameters: [(String, Variable)] { [(lora_A.name, lora_A), (lora_B.name, lora_B)] }

    public func apply(_ g: Graph, input x: Variable, base: Variable) -> Variable {
        var h = x                                     // [T, in]
        if dropout > 0 && training {
            var rng = SplitMix64(seed: dropoutSeed)
            rng.skip(g.firstRow * x.shape[1])         // the mask of the whole sequence, whatever slice x is
            let keep = 1 - dropout
            let mask = Tensor(uninitialized: x.shape)
            for i in 0..<mask.count { mask.data[i] = rng.nextFloat() < keep ? 1 / keep : 0 }
            h = g.mul(x, Variable(mask))
        }
        let down = g.linear(h, weight: lora_A)        // [T, r]
        let up = g.linear(down, weight: lora_B)       // [T, out]
        return g.add(base, g.scale(up, scale))
    }

    /// W + scale·B·A (what merging writes), in fp32, into `w` itself.
    public static func merge(into w: Tensor, a: Tensor, b: Tensor, scale: Float) {
        BLAS.gemm(b, a, alpha: scale, beta: 1, into: w)
    }
}

/// A projection LoRA can adapt (the last component of its HF module path).
public enum LoRATarget: String, KnobChoice, Sendable {
    case q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
    /// Phi-3's fused projections (docs/CONVENTIONS.md §22).
    case qkv_proj, gate_up_proj

    /// The attention projections of `config`'s family: q/k/v/o, or Phi-3's fused qkv_proj and o_proj.
    public static func attention(of config: LlamaConfig) -> [LoRATarget] {
        config.fusedProjections ? [.qkv_proj, .o_proj] : [.q_proj, .k_proj, .v_proj, .o_proj]
    }
}

/// A module trained in full beside the adapters (LongLoRA's extras).
public enum TrainableExtra: String, KnobChoice, Sendable {
    case embed_tokens, norm, lm_head
}

/// The adapter kinds.
public enum AdapterKind: String, KnobChoice, Sendable { case lora }

/// What to adapt and train (LongLoRA: LoRA on attention plus embeddings and norms); also the
/// `adapter` section of a recipe.
public struct LoRAConfig: KnobSection, Sendable {
    @Knob("adapter kind") public var kind = AdapterKind.lora
    @Knob("LoRA rank r: the inner size of B·A") public var rank = 8
    @Knob("LoRA alpha: the update is scaled by alpha/r (alpha/√r with rslora)") public var alpha = 16.0
    @Knob("dropout probability on the adapter's input during training, in [0, 1)") public var dropout = 0.0
    @Knob("rank-stabilized LoRA: scale alpha/√r instead of alpha/r") public var rslora = false
    @Knob("projections that get an adapter, in every layer")
    public var targets: [LoRATarget] = [.q_proj, .k_proj, .v_proj, .o_proj]
    @Knob("modules trained in full: embed_tokens, norm (every RMSNorm), lm_head (the embeddings when tied)")
    public var trainable: [TrainableExtra] = [.embed_tokens, .norm]

    public init() {}

    /// The factor on B·A: alpha/r, or alpha/√r with rsLoRA. The one definition (training and merging).
    public var scale: Float { Float(rslora ? alpha / Double(rank).squareRoot() : alpha / Double(rank)) }

    public func validate(source: String) throws {
        guard rank > 0 else { throw LongTuneError("\(source): rank must be positive, got \(rank)") }
        guard alpha > 0, alpha.isFinite else { throw LongTuneError("\(source): alpha must be positive, got \(alpha)") }
        guard (0..<1).contains(dropout) else {
            throw LongTuneError("\(source): dropout must be in [0, 1), got \(dropout)")
        }
    }
}

extension LlamaForCausalLM {
    /// The linear modules `targets` names (never the LM head), in walk order. A target the model does not have (q_proj
    /// on Phi-3, whose q/k/v are one qkv_proj) is an error naming the ones it has.
    public func loraTargets(_ targets: [LoRATarget]) throws -> [Linear] {
        let have = projectionTargets
        if let missing = targets.first(where: { !have.contains($0) }) {
            let model = config.architectures?.first ?? "?", names = have.map(\.rawValue).joined(separator: ", ")
            throw LongTuneError("adapter.targets: this model (\(model)) has no \(missing.rawValue); its projections "
                                + "are \(names): set adapter.targets to some of them")
        }
        return projections.filter { lin in targets.contains { lin.path.hasSuffix("." + $0.rawValue) } }
    }

    /// Every projection LoRA can target in this model (q/k/v/o, gate/up/down; Phi-3: qkv_proj, o_proj, gate_up_proj,
    /// down_proj).
    public var projectionTargets: [LoRATarget] {
        let linears = projections
        return LoRATarget.allCases.filter { t in linears.contains { $0.path.hasSuffix("." + t.rawValue) } }
    }

    var projections: [Linear] { modules().compactMap { $0 as? Linear }.filter { $0 !== lm_head } }

    /// The modules trained in full for `extras`, in walk order. A tied LM head trains as the embeddings.
    public func extraModules(_ extras: [TrainableExtra]) -> [ParameterModule] {
        let headIsEmbedding = config.tieWordEmbeddings && extras.contains(.lm_head)
        return modules().filter { m in
            switch m {
            case is Embedding: return extras.contains(.embed_tokens) || headIsEmbedding
            case is LlamaRMSNorm: return extras.contains(.norm)
            default: return m === lm_head && extras.contains(.lm_head)
            }
        }
    }
}

/// A model with LoRA adapters attached and its extras unfrozen: the trainable tensors under HF
/// names (`model.layers.0.self_attn.q_proj.lora_A.weight`, `model.embed_tokens.weight`, …).
public final class LoRAModel {
    public let base: LlamaForCausalLM
    public let config: LoRAConfig
    public let adapters: [(String, LoRALinear)]      // module path -> adapter
    public let extras: [(String, Variable)]

    public init(_ model: LlamaForCausalLM, config: LoRAConfig, seed: UInt64) throws {
        try config.validate(source: "adapter")
        base = model
        self.config = config
        var rng = SplitMix64(seed: seed)
        adapters = try model.loraTargets(config.targets).map { lin in
            let lora = LoRALinear(adapting: lin, config: config, rng: &rng)
            lin.adapter = lora
            return (lin.path, lora)
        }
        let extraModules = model.extraModules(config.trainable)
        for case let e as Embedding in extraModules { e.widenToFP32() }   // a 16-bit frozen table trains in fp32
        extras = extraModules.flatMap(\.parameters)
        for (_, p) in extras { p.requiresGrad = true }
    }

    /// The LoRA tensors, A then B per adapted module.
    public var adapterParameters: [(String, Variable)] { adapters.flatMap { $0.1.parameters } }

    /// Every trainable tensor by name, adapters first.
    public var trainableParameters: [(String, Variable)] { adapterParameters + extras }

    /// Enters training mode with the dropout seeds for one sequence (each adapter its own stream).
    public func seedDropout(step: UInt64, seed: UInt64) {
        for (i, (_, a)) in adapters.enumerated() {
            var r = SplitMix64(seed: seed ^ (step &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(i) &* 0xBF58_476D_1CE4_E5B9)
            a.dropoutSeed = r.next()
            a.training = true
        }
    }

    /// Evaluation mode: no dropout.
    public func eval() { for (_, a) in adapters { a.training = false } }
}
