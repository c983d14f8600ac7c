import Engine
import Foundation
import Llama

/// LoRA (SPEC §5, peft conventions): y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ with A [r, in] and
/// B [out, r]; scale = alpha/r, or alpha/√r with rsLoRA. A starts kaiming-uniform (a = √5, i.e.
/// U(±1/√in)) and B at zero, so the adapted model starts equal to the base.
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

    public init(name: String, inFeatures: Int, outFeatures: Int, rank: Int, alpha: Double, dropout: Double,
                rsLoRA: Bool, rng: inout SplitMix64) {
        let bound = 1 / Float(inFeatures).squareRoot()
        lora_A = Variable(Tensor(shape: [rank, inFeatures], uniform: -bound, bound, rng: &rng), requiresGrad: true,
                          name: name + ".lora_A.weight")
        lora_B = Variable(Tensor(zeros: [outFeatures, rank]), requiresGrad: true, name: name + ".lora_B.weight")
        scale = Float(rsLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank))
        self.dropout = Float(dropout)
    }

    public var parameters: [(String, Variable)] { [(lora_A.name, lora_A), (lora_B.name, lora_B)] }

    public func apply(_ g: Graph, input x: Variable, base: Variable) -> Variable {
        var h = x
        if dropout > 0 && training {
            var rng = SplitMix64(seed: dropoutSeed)
            let keep = 1 - dropout
            let mask = Tensor(uninitialized: x.shape)
            for i in 0..<mask.count { mask.data[i] = rng.nextFloat() < keep ? 1 / keep : 0 }
            h = g.mul(x, Variable(mask))
        }
        let down = g.linear(h, weight: lora_A)        // [T, r]
        let up = g.linear(down, weight: lora_B)       // [T, out]
        return g.add(base, g.scale(up, scale))
    }

    /// W + scale·B·A (what merging writes), in fp32.
    public func merged(into w: Tensor) -> Tensor {
        let out = w.copy()
        BLAS.gemm(lora_B.value, lora_A.value, alpha: scale, beta: 1, into: out)
        return out
    }
}

/// What to adapt and train (LongLoRA: LoRA on attention plus embeddings and norms); also the
/// `adapter` section of a recipe.
public struct LoRAConfig: Codable, Equatable, Sendable {
    /// Adapter kind; lora is the one implemented.
    public var kind: String = "lora"
    public var rank: Int = 8
    public var alpha: Double = 16
    public var dropout: Double = 0
    public var rsLoRA: Bool = false
    /// Projection names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.
    public var targets: [String] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    /// Fully trained extras: embed_tokens, norm (every RMSNorm), lm_head.
    public var trainable: [String] = ["embed_tokens", "norm"]

    enum CodingKeys: String, CodingKey { case kind, rank, alpha, dropout, rsLoRA = "rslora", targets, trainable }

    public init() {}
    public static let projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    public static let extras = ["embed_tokens", "norm", "lm_head"]

    public func validate(source: String) throws {
        guard kind == "lora" else { throw EngineError("\(source): kind \"\(kind)\" is not supported yet (lora)") }
        guard rank > 0 else { throw EngineError("\(source): rank must be positive, got \(rank)") }
        guard alpha > 0 else { throw EngineError("\(source): alpha must be positive, got \(alpha)") }
        guard (0..<1).contains(dropout) else { throw EngineError("\(source): dropout must be in [0, 1), got \(dropout)") }
        for t in targets where !Self.projections.contains(t) {
            throw EngineError("\(source): target \"\(t)\" is not a projection (\(Self.projections.joined(separator: ", ")))")
        }
        for t in trainable where !Self.extras.contains(t) {
            throw EngineError("\(source): trainable \"\(t)\" is not one of \(Self.extras.joined(separator: ", "))")
        }
    }
}

/// A model with LoRA adapters attached and its extras unfrozen: the trainable tensors under HF
/// names (`model.layers.0.self_attn.q_proj.lora_A.weight`, `model.embed_tokens.weight`, …).
public final class LoRAModel {
    public let base: LlamaForCausalLM
    public let config: LoRAConfig
    public let adapters: [(String, LoRALinear)]      // module name -> adapter
    public let extras: [(String, Variable)]

    public init(_ model: LlamaForCausalLM, config: LoRAConfig, seed: UInt64) throws {
        try config.validate(source: "adapter")
        base = model
        self.config = config
        var rng = SplitMix64(seed: seed)
        var adapters: [(String, LoRALinear)] = []
        for (i, layer) in model.model.layers.enumerated() {
            let a = layer.self_attn, m = layer.mlp
            let modules: [(String, Linear)] = [("self_attn.q_proj", a.q_proj), ("self_attn.k_proj", a.k_proj),
                                               ("self_attn.v_proj", a.v_proj), ("self_attn.o_proj", a.o_proj),
                                               ("mlp.gate_proj", m.gate_proj), ("mlp.up_proj", m.up_proj), ("mlp.down_proj", m.down_proj)]
            for (path, lin) in modules where config.targets.contains(String(path.split(separator: ".").last!)) {
                let name = "model.layers.\(i).\(path)"
                let lora = LoRALinear(name: name, inFeatures: lin.weight.shape[1], outFeatures: lin.weight.shape[0],
                                      rank: config.rank, alpha: config.alpha, dropout: config.dropout, rsLoRA: config.rsLoRA, rng: &rng)
                lin.adapter = lora
                adapters.append((name, lora))
            }
        }
        self.adapters = adapters
        var extras: [(String, Variable)] = []
        for (name, p) in model.namedParameters() {
            let isNorm = name.hasSuffix("layernorm.weight") || name == "model.norm.weight"
            let wanted = (config.trainable.contains("embed_tokens") && name == "model.embed_tokens.weight")
                || (config.trainable.contains("norm") && isNorm)
                || (config.trainable.contains("lm_head") && name == "lm_head.weight")
            if wanted { p.requiresGrad = true; extras.append((name, p)) }
        }
        if config.trainable.contains("lm_head") && model.config.tieWordEmbeddings
            && !extras.contains(where: { $0.0 == "model.embed_tokens.weight" }) {
            model.model.embed_tokens.requiresGrad = true     // tied: the LM head is the embedding table
            extras.append(("model.embed_tokens.weight", model.model.embed_tokens))
        }
        self.extras = extras
    }

    /// Every trainable tensor by name, adapters first.
    public var trainableParameters: [(String, Variable)] {
        adapters.flatMap { $0.1.parameters } + extras
    }

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
