import Engine
import Foundation

// The Llama decoder, module by module as in transformers' modeling_llama.py; parameters keep HF
// names, so loading, checkpoints and merging are name lookups.

/// What one forward pass needs besides the tokens: RoPE tables for the positions, the attention
/// layout (causal, packed documents, S2 groups) and whether to checkpoint each layer.
public struct ForwardContext {
    public let rope: RopeTables
    public let layout: AttentionLayout
    public let checkpointLayers: Bool
    /// S2-Attn `roll` variant: the group size G; heads [H/2, H) of q, k, v are rolled by −G/2
    /// before attention (within groups of G) and the output rolled back.
    public let rollGroup: Int?
}

/// How attention is computed in training (evaluation always uses full attention).
public enum AttentionMode: Equatable, Sendable {
    case full
    /// Shift Short Attention with group size L·ratio; `roll` reproduces the paper's original
    /// (wrap-around) implementation, `boundaries` its leak-free flash-attention one.
    case s2(groupRatio: Double, roll: Bool)
}

/// Hook through which adapters (LoRA) add to a frozen projection's output.
public protocol LinearAdapter: AnyObject {
    /// Returns base + the adapter's contribution for input x.
    func apply(_ g: Graph, input x: Variable, base: Variable) -> Variable
    var parameters: [(String, Variable)] { get }
}

/// torch.nn.Linear: y = x Wᵀ + b, weight [out, in].
public final class Linear {
    public let weight: Variable
    public let bias: Variable?
    public var adapter: LinearAdapter?

    public init(name: String, inFeatures: Int, outFeatures: Int, bias: Bool) {
        weight = Variable(Tensor(zeros: [outFeatures, inFeatures]), name: name + ".weight")
        self.bias = bias ? Variable(Tensor(zeros: [outFeatures]), name: name + ".bias") : nil
    }

    public func callAsFunction(_ g: Graph, _ x: Variable) -> Variable {
        let y = g.linear(x, weight: weight, bias: bias)
        return adapter?.apply(g, input: x, base: y) ?? y
    }
}

public final class LlamaRMSNorm {
    public let weight: Variable
    let eps: Float
    init(name: String, size: Int, eps: Double) {
        weight = Variable(Tensor(zeros: [size]), name: name + ".weight")
        weight.value.fill(1)
        self.eps = Float(eps)
    }
    func callAsFunction(_ g: Graph, _ x: Variable) -> Variable { g.rmsNorm(x, weight: weight, eps: eps) }
}

public final class LlamaAttention {
    public let q_proj, k_proj, v_proj, o_proj: Linear
    let heads, kvHeads, headDim: Int

    init(_ c: LlamaConfig, prefix: String) {
        heads = c.numAttentionHeads; kvHeads = c.numKeyValueHeads; headDim = c.headDim
        q_proj = Linear(name: prefix + ".q_proj", inFeatures: c.hiddenSize, outFeatures: heads * headDim, bias: c.attentionBias)
        k_proj = Linear(name: prefix + ".k_proj", inFeatures: c.hiddenSize, outFeatures: kvHeads * headDim, bias: c.attentionBias)
        v_proj = Linear(name: prefix + ".v_proj", inFeatures: c.hiddenSize, outFeatures: kvHeads * headDim, bias: c.attentionBias)
        o_proj = Linear(name: prefix + ".o_proj", inFeatures: heads * headDim, outFeatures: c.hiddenSize, bias: c.outputProjectionBias)
    }

    func callAsFunction(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        let q = g.rope(q_proj(g, x), heads: heads, headDim: headDim, tables: ctx.rope)     // [T, H·D]
        let k = g.rope(k_proj(g, x), heads: kvHeads, headDim: headDim, tables: ctx.rope)   // [T, Hkv·D]
        let v = v_proj(g, x)                                                               // [T, Hkv·D]
        guard let group = ctx.rollGroup else {
            let a = g.attention(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: headDim, layout: ctx.layout)
            return o_proj(g, a)                                                            // [T, C]
        }
        // S2 roll: shift the second half of the (KV-expanded) heads by half a group.
        let shifted = (heads / 2)..<heads, rep = heads / kvHeads
        let qr = g.rollRows(q, heads: shifted, headDim: headDim, shift: group / 2)
        let kr = g.rollRows(g.repeatKV(k, kvHeads: kvHeads, group: rep, headDim: headDim), heads: shifted, headDim: headDim, shift: group / 2)
        let vr = g.rollRows(g.repeatKV(v, kvHeads: kvHeads, group: rep, headDim: headDim), heads: shifted, headDim: headDim, shift: group / 2)
        let a = g.attention(q: qr, k: kr, v: vr, heads: heads, kvHeads: heads, headDim: headDim, layout: ctx.layout)
        return o_proj(g, g.rollRows(a, heads: shifted, headDim: headDim, shift: -group / 2))
    }
}

public final class LlamaMLP {
    public let gate_proj, up_proj, down_proj: Linear
    init(_ c: LlamaConfig, prefix: String) {
        gate_proj = Linear(name: prefix + ".gate_proj", inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: c.mlpBias)
        up_proj = Linear(name: prefix + ".up_proj", inFeatures: c.hiddenSize, outFeatures: c.intermediateSize, bias: c.mlpBias)
        down_proj = Linear(name: prefix + ".down_proj", inFeatures: c.intermediateSize, outFeatures: c.hiddenSize, bias: c.mlpBias)
    }
    func callAsFunction(_ g: Graph, _ x: Variable) -> Variable {
        down_proj(g, g.swiglu(gate: gate_proj(g, x), up: up_proj(g, x)))
    }
}

public final class LlamaDecoderLayer {
    public let self_attn: LlamaAttention
    public let mlp: LlamaMLP
    public let input_layernorm, post_attention_layernorm: LlamaRMSNorm

    init(_ c: LlamaConfig, index: Int) {
        let p = "model.layers.\(index)"
        self_attn = LlamaAttention(c, prefix: p + ".self_attn")
        mlp = LlamaMLP(c, prefix: p + ".mlp")
        input_layernorm = LlamaRMSNorm(name: p + ".input_layernorm", size: c.hiddenSize, eps: c.rmsNormEps)
        post_attention_layernorm = LlamaRMSNorm(name: p + ".post_attention_layernorm", size: c.hiddenSize, eps: c.rmsNormEps)
    }

    func callAsFunction(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        let h = g.add(x, self_attn(g, input_layernorm(g, x), ctx))
        return g.add(h, mlp(g, post_attention_layernorm(g, h)))
    }
}

public final class LlamaModel {
    public let embed_tokens: Variable
    public let layers: [LlamaDecoderLayer]
    public let norm: LlamaRMSNorm

    init(_ c: LlamaConfig) {
        embed_tokens = Variable(Tensor(zeros: [c.vocabSize, c.hiddenSize]), name: "model.embed_tokens.weight")
        layers = (0..<c.numHiddenLayers).map { LlamaDecoderLayer(c, index: $0) }
        norm = LlamaRMSNorm(name: "model.norm", size: c.hiddenSize, eps: c.rmsNormEps)
    }

    /// Final hidden states [T, C] after the last norm.
    func callAsFunction(_ g: Graph, _ ids: [Int32], _ ctx: ForwardContext) -> Variable {
        var h = g.embedding(ids, table: embed_tokens)
        for layer in layers {
            h = ctx.checkpointLayers ? g.checkpoint([h]) { g, x in layer(g, x[0], ctx) } : layer(g, h, ctx)
        }
        return norm(g, h)
    }
}

public final class LlamaForCausalLM {
    public let config: LlamaConfig
    public let model: LlamaModel
    /// The LM head; with tied embeddings this is the embedding table itself.
    public private(set) var lm_head: Variable

    public init(config: LlamaConfig) {
        self.config = config
        model = LlamaModel(config)
        lm_head = config.tieWordEmbeddings ? model.embed_tokens
            : Variable(Tensor(zeros: [config.vocabSize, config.hiddenSize]), name: "lm_head.weight")
    }

    /// Every parameter under its HF name (the tied LM head appears once, as the embeddings).
    public func namedParameters() -> [(String, Variable)] {
        var out: [(String, Variable)] = [("model.embed_tokens.weight", model.embed_tokens)]
        for layer in model.layers {
            let a = layer.self_attn, m = layer.mlp
            for lin in [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj] {
                out.append((lin.weight.name, lin.weight))
                if let b = lin.bias { out.append((b.name, b)) }
            }
            out.append((layer.input_layernorm.weight.name, layer.input_layernorm.weight))
            out.append((layer.post_attention_layernorm.weight.name, layer.post_attention_layernorm.weight))
        }
        out.append(("model.norm.weight", model.norm.weight))
        if !config.tieWordEmbeddings { out.append(("lm_head.weight", lm_head)) }
        return out
    }

    /// RoPE tables for `positions` with the config's scaling kind.
    public func ropeTables(positions: [Int]) -> RopeTables {
        let f = RopeFrequencies(scaling: config.ropeScaling, theta: config.ropeTheta, rotaryDim: config.rotaryDim,
                                maxPositionEmbeddings: config.maxPositionEmbeddings,
                                sequenceLength: (positions.max() ?? 0) + 1)
        return RopeTables(positions: positions, invFreq: f.invFreq, attentionFactor: f.attentionFactor)
    }

    /// Forward context for one sequence: positions 0..<T (or restarting at each document start),
    /// causal attention (inside documents when given), or a custom layout.
    public func context(length t: Int, documentStarts: [Int]? = nil, attention: AttentionMode = .full,
                        checkpointLayers: Bool = false) throws -> ForwardContext {
        var positions = Array(0..<t)
        let h = config.numAttentionHeads
        var documents: [Range<Int>]? = nil
        if let starts = documentStarts, starts != [0] {
            guard starts.first == 0, zip(starts, starts.dropFirst()).allSatisfy({ $0 < $1 }), starts.last! < t else {
                throw EngineError("document starts \(starts.prefix(8)) must begin at 0 and increase within 0..<\(t)")
            }
            documents = AttentionLayout.segments(from: starts, length: t)
            for s in documents! { for i in s { positions[i] = i - s.lowerBound } }
        }
        let rope = ropeTables(positions: positions)
        switch attention {
        case .full:
            let layout = try documents.map { _ in try AttentionLayout.documents(length: t, heads: h, documentStarts: documentStarts!) }
                ?? .causal(length: t, heads: h)
            return ForwardContext(rope: rope, layout: layout, checkpointLayers: checkpointLayers, rollGroup: nil)
        case .s2(let ratio, let roll):
            let g = Int((Double(t) * ratio).rounded())
            guard g > 0, t % g == 0, g % 2 == 0 else {
                throw EngineError("S2-Attn: sequence length \(t) × group ratio \(ratio) gives group size \(g); the length must be a multiple of an even group size (e.g. a multiple of \(Int((2 / ratio).rounded())))")
            }
            if roll {
                guard documents == nil else {
                    throw EngineError("S2-Attn roll variant cannot keep packed documents apart (it wraps tokens around); use shift: boundaries")
                }
                let groups = stride(from: 0, to: t, by: g).map { $0..<($0 + g) }
                let layout = try AttentionLayout(length: t, heads: h, groups: [.init(heads: 0..<h, segments: groups)])
                return ForwardContext(rope: rope, layout: layout, checkpointLayers: checkpointLayers, rollGroup: g)
            }
            let layout = try AttentionLayout.shiftedShort(length: t, heads: h, groupSize: g, within: documents)
            return ForwardContext(rope: rope, layout: layout, checkpointLayers: checkpointLayers, rollGroup: nil)
        }
    }

    /// Final hidden states [T, C].
    public func hiddenStates(_ g: Graph, ids: [Int32], context: ForwardContext) -> Variable {
        model(g, ids, context)
    }

    /// Logits [T, V] without recording (for evaluation and tests).
    public func logits(ids: [Int32]) throws -> Tensor {
        let g = Graph(recording: false)
        let h = hiddenStates(g, ids: ids, context: try context(length: ids.count))
        return g.linear(h, weight: lm_head).value
    }

    /// Loss of each next-token prediction without recording: entry i is −log p(ids[i+1] | ids[0…i]);
    /// T − 1 entries.
    public func tokenLosses(ids: [Int32], context: ForwardContext) -> [Double] {
        let h = hiddenStates(Graph(recording: false), ids: ids, context: context).value
        return Array(LMHeadLoss.perToken(hidden: h, weight: lm_head.value, targets: Array(ids.dropFirst()) + [-100]).dropLast())
    }

    /// transformers' causal-LM loss: token t+1 is the target of position t; labels default to the
    /// ids, −100 entries are ignored. Mean over the counted targets.
    public func loss(_ g: Graph, ids: [Int32], labels: [Int32]? = nil, context: ForwardContext) -> Variable {
        let lab = labels ?? ids
        let targets = Array(lab.dropFirst()) + [-100]
        return g.lmHeadCrossEntropy(hiddenStates(g, ids: ids, context: context), weight: lm_head, targets: targets)
    }
}

extension LlamaConfig {
    /// Every parameter's HF name and shape, in `namedParameters()` order, without allocating a
    /// model (merging streams tensors one at a time).
    public func parameterShapes() -> [(String, [Int])] {
        let c = hiddenSize, q = numAttentionHeads * headDim, kv = numKeyValueHeads * headDim, i = intermediateSize
        var out: [(String, [Int])] = [("model.embed_tokens.weight", [vocabSize, c])]
        for l in 0..<numHiddenLayers {
            let p = "model.layers.\(l)"
            let linears: [(String, Int, Int, Bool)] = [
                ("self_attn.q_proj", q, c, attentionBias), ("self_attn.k_proj", kv, c, attentionBias),
                ("self_attn.v_proj", kv, c, attentionBias), ("self_attn.o_proj", c, q, outputProjectionBias),
                ("mlp.gate_proj", i, c, mlpBias), ("mlp.up_proj", i, c, mlpBias), ("mlp.down_proj", c, i, mlpBias)]
            for (name, o, n, bias) in linears {
                out.append(("\(p).\(name).weight", [o, n]))
                if bias { out.append(("\(p).\(name).bias", [o])) }
            }
            out.append(("\(p).input_layernorm.weight", [c]))
            out.append(("\(p).post_attention_layernorm.weight", [c]))
        }
        out.append(("model.norm.weight", [c]))
        if !tieWordEmbeddings { out.append(("lm_head.weight", [vocabSize, c])) }
        return out
    }
}
