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
    /// Sequence parallelism: this rank's share of the sequence; `layout` then covers the halo rows and the share.
    public let share: SequenceShare?
    /// Rows of keys and values each rank passes to the next (half an S2 group) under sequence parallelism.
    public let haloRows: Int
    /// Gemma 3's local layers: their RoPE tables (the local base, no scaling) and layout (causal within documents and
    /// the sliding window, never S2); nil for models without local layers.
    public var localRope: RopeTables? = nil
    public var localLayout: AttentionLayout? = nil

    /// The RoPE tables and layout of layer `local` or global.
    func attention(local: Bool) -> (rope: RopeTables, layout: AttentionLayout) {
        local ? (localRope!, localLayout!) : (rope, layout)
    }
}

/// One rank's share of a sequence under S2-Attn sequence parallelism (docs/CONVENTIONS.md §17): consecutive rows,
/// whole S2 groups, and the neighbours holding the rows before and after them.
public struct SequenceShare {
    /// The ranks sharing the sequence, and this one's rows of it.
    public let ranks: Int
    public let rows: Range<Int>
    public let exchange: HaloExchange

    /// The share of `rank` among `ranks` equal shares of a sequence of `length` tokens.
    public init(rank: Int, of ranks: Int, length: Int, exchange: HaloExchange) {
        self.ranks = ranks
        self.rows = (rank * length / ranks)..<((rank + 1) * length / ranks)
        self.exchange = exchange
    }

    /// The rule of sequence parallelism (docs/CONVENTIONS.md §17), the one place it is checked: S2-Attn with shift
    /// boundaries, and `ranks` equal shares of whole S2 groups. Returns the halo a rank receives (half a group; 0 for
    /// one rank). `option` names the setting in the errors (a recipe key, a command-line option).
    public static func haloRows(length t: Int, attention: AttentionMode, ranks p: Int, option: String) throws -> Int {
        guard p >= 1, p <= 1 << 20 else { throw LongTuneError("\(option) must be 1 or more, got \(p)") }
        guard p > 1 else { return 0 }
        guard case .s2(let ratio, roll: false) = attention else {
            throw LongTuneError("\(option): \(p) ranks per sequence need S2-Attn (attention.mode: s2, "
                                + "shift: boundaries): full attention would need every key on every rank, and roll "
                                + "wraps the last half group around to the first rank; set \(option) to 1 or use S2 "
                                + "with boundaries")
        }
        let g = try AttentionLayout.s2GroupSize(length: t, ratio: ratio), groups = t / g
        guard groups % p == 0 else {
            throw LongTuneError("\(option): \(p) ranks cannot share \(groups) S2 groups (context \(t) × group_ratio "
                                + "\(ratio) = \(g) tokens each) equally; choose a divisor of \(groups), or a smaller "
                                + "group_ratio")
        }
        return g / 2
    }
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

/// A module that owns parameters (a leaf of torch's module tree), under its HF path such as
/// `model.layers.0.self_attn.q_proj`. Shapes are known from the config alone; the tensors are
/// created (zero-filled) on first use, so walking a model's structure allocates nothing.
public protocol ParameterModule: AnyObject {
    /// The HF module path; parameter names are this plus `.weight` / `.bias`.
    var path: String { get }
    /// Each parameter's HF name and shape, without allocating it.
    var parameterShapes: [(String, [Int])] { get }
    /// Each parameter under its HF name.
    var parameters: [(String, Variable)] { get }
}

/// torch.nn.Linear: y = x Wᵀ + b, weight [out, in].
public final class Linear: ParameterModule {
    public let path: String
    public let inFeatures, outFeatures: Int
    let hasBias: Bool
    /// Another module's weight this one shares (a tied LM head uses the embedding table).
    let tiedWeight: (() -> Variable)?
    public lazy var weight = tiedWeight?() ?? Variable(Tensor(zeros: [outFeatures, inFeatures]), name: path + ".weight")
    public lazy var bias: Variable? = hasBias ? Variable(Tensor(zeros: [outFeatures]), name: path + ".bias") : nil
    public var adapter: LinearAdapter?
    /// The frozen weight kept quantized (QLoRA, docs/CONVENTIONS.md §14), or nil when `weight` holds it
    /// in fp32. A quantized weight is not among `parameters`: nothing trains, loads or saves it by name.
    public var quantized: QuantizedMatrix?

    public init(_ path: String, inFeatures: Int, outFeatures: Int, bias: Bool, tiedWeight: (() -> Variable)? = nil) {
        self.path = path
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        hasBias = bias
        self.tiedWeight = tiedWeight
    }

    public var parameterShapes: [(String, [Int])] {
        [(path + ".weight", [outFeatures, inFeatures])] + (hasBias ? [(path + ".bias", [outFeatures])] : [])
    }
    public var parameters: [(String, Variable)] {
        (quantized == nil ? [(weight.name, weight)] : []) + (bias.map { [($0.name, $0)] } ?? [])
    }

    public func callAsFunction(_ g: Graph, _ x: Variable) -> Variable {
        let y = quantized.map { g.linear(x, quantized: $0, bias: bias) } ?? g.linear(x, weight: weight, bias: bias)
        return adapter?.apply(g, input: x, base: y) ?? y
    }
}

/// torch.nn.Embedding: the token table [vocab, hidden].
public final class Embedding: ParameterModule {
    public let path: String
    public let count, dimension: Int
    public lazy var weight = Variable(Tensor(zeros: [count, dimension]), name: path + ".weight")
    /// The frozen table kept in its stored 16-bit dtype (a QLoRA base's embedding, also the LM head when tied,
    /// docs/CONVENTIONS.md §14), or nil when `weight` holds it. Like a quantized projection it is not among
    /// `parameters`.
    public var frozen16: HalfMatrix?

    init(_ path: String, count: Int, dimension: Int) {
        self.path = path
        self.count = count
        self.dimension = dimension
    }

    public var parameterShapes: [(String, [Int])] { [(path + ".weight", [count, dimension])] }
    public var parameters: [(String, Variable)] { frozen16 == nil ? [(weight.name, weight)] : [] }

    /// Moves a 16-bit frozen table into `weight` in fp32, before it is trained.
    public func widenToFP32() {
        guard let table = frozen16 else { return }
        weight.value = table.widened()
        frozen16 = nil
    }

    func callAsFunction(_ g: Graph, _ ids: [Int32]) -> Variable {
        frozen16.map { g.embedding(ids, frozen: $0) } ?? g.embedding(ids, table: weight)
    }
}

/// LlamaRMSNorm, or Gemma3RMSNorm (scales by 1 + weight: `offset` 1, weights initialised to 0).
public final class LlamaRMSNorm: ParameterModule {
    public let path: String
    let size: Int
    let eps: Float
    let offset: Float
    public lazy var weight: Variable = {
        let w = Variable(Tensor(zeros: [size]), name: path + ".weight")
        w.value.fill(1 - offset)
        return w
    }()

    init(_ path: String, size: Int, _ c: LlamaConfig) {
        self.path = path
        self.size = size
        self.eps = Float(c.rmsNormEps)
        offset = c.normWeightOffset
    }

    public var parameterShapes: [(String, [Int])] { [(path + ".weight", [size])] }
    public var parameters: [(String, Variable)] { [(weight.name, weight)] }

    func callAsFunction(_ g: Graph, _ x: Variable) -> Variable {
        g.rmsNorm(x, weight: weight, eps: eps, weightOffset: offset)
    }
}

public final class LlamaAttention {
    /// The separate projections, or nil where one fused `qkv_proj` computes them (Phi-3: [T, (H + 2·Hkv)·D], q then k
    /// then v).
    public let q_proj, k_proj, v_proj, qkv_proj: Linear?
    public let o_proj: Linear
    /// Qwen3's and Gemma 3's per-head RMSNorm of queries and keys over head_dim, before RoPE (nil for the others).
    public let q_norm, k_norm: LlamaRMSNorm?
    let heads, kvHeads, headDim: Int
    /// 1/√head_dim, or Gemma's 1/√query_pre_attn_scalar.
    let scale: Float
    /// A Gemma 3 local layer: its own RoPE tables and sliding window (`ForwardContext.attention(local:)`).
    let isLocal: Bool
    /// Attention's block products in bf16 (`model.compute_dtype: bf16` where `FlashAttentionBF16.applies`).
    public var attentionInBF16 = false

    init(_ c: LlamaConfig, path: String, layer: Int) {
        heads = c.numAttentionHeads; kvHeads = c.numKeyValueHeads; headDim = c.headDim
        scale = c.attentionScale; isLocal = c.isLocal(layer: layer)
        let hidden = c.hiddenSize, bias = c.attentionBias, fused = c.fusedProjections
        func projection(_ name: String, _ out: Int) -> Linear {
            Linear(path + "." + name, inFeatures: hidden, outFeatures: out, bias: bias)
        }
        q_proj = fused ? nil : projection("q_proj", heads * headDim)
        k_proj = fused ? nil : projection("k_proj", kvHeads * headDim)
        v_proj = fused ? nil : projection("v_proj", kvHeads * headDim)
        qkv_proj = fused ? projection("qkv_proj", (heads + 2 * kvHeads) * headDim) : nil
        o_proj = Linear(path + ".o_proj", inFeatures: heads * headDim, outFeatures: hidden,
                        bias: c.outputProjectionBias)
        q_norm = c.queryKeyNorms ? LlamaRMSNorm(path + ".q_norm", size: headDim, c) : nil
        k_norm = c.queryKeyNorms ? LlamaRMSNorm(path + ".k_norm", size: headDim, c) : nil
    }

    /// In the order of HF's state dict (Phi-3 declares o_proj before qkv_proj).
    var modules: [ParameterModule] {
        (qkv_proj.map { [o_proj, $0] } ?? [q_proj!, k_proj!, v_proj!, o_proj]) + [q_norm, k_norm].compactMap { $0 }
    }

    /// Queries [T, H·D], keys and values [T, Hkv·D] before RoPE: the projections (or the fused one's columns), each
    /// head of q and k normalised where the family does.
    func projections(_ g: Graph, _ x: Variable) -> (q: Variable, k: Variable, v: Variable) {
        let q, k, v: Variable
        if let qkv_proj {
            let y = qkv_proj(g, x), qw = heads * headDim, kw = kvHeads * headDim           // [T, (H + 2·Hkv)·D]
            (q, k, v) = (g.columns(y, 0..<qw), g.columns(y, qw..<(qw + kw)), g.columns(y, (qw + kw)..<(qw + 2 * kw)))
        } else {
            (q, k, v) = (q_proj!(g, x), k_proj!(g, x), v_proj!(g, x))
        }
        return (q_norm.map { $0(g, q) } ?? q, k_norm.map { $0(g, k) } ?? k, v)
    }

    func callAsFunction(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        let (qp, kp, v) = projections(g, x)                                                // v [T, Hkv·D]
        let (rope, layout) = ctx.attention(local: isLocal)
        let q = g.rope(qp, heads: heads, headDim: headDim, tables: rope)                   // [T, H·D]
        let k = g.rope(kp, heads: kvHeads, headDim: headDim, tables: rope)                 // [T, Hkv·D]
        if let group = ctx.rollGroup, !isLocal { return o_proj(g, rolledAttention(g, q, k, v, group: group, ctx)) }
        if let share = ctx.share { return o_proj(g, attentionWithHalo(g, q, k, v, share, ctx)) }
        let a = g.attention(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: headDim,
                            layout: layout, scale: scale, bf16: attentionInBF16)          // [T, H·D]
        return o_proj(g, a)                                                                // [T, C]
    }

    /// Sequence parallel (docs/CONVENTIONS.md §17): keys and values [T, Hkv·D] get the previous rank's last
    /// `haloRows` rows in front, [R + T, Hkv·D] (R = 0 on the first rank); the queries as many zero rows, which the
    /// kernel skips (key-only rows) and whose outputs are dropped. The layout keeps the halo's keys for the shifted
    /// heads only.
    func attentionWithHalo(_ g: Graph, _ q: Variable, _ k: Variable, _ v: Variable, _ share: SequenceShare,
                           _ ctx: ForwardContext) -> Variable {
        let kh = g.haloRows(k, rows: ctx.haloRows, exchange: share.exchange)              // [R + T, Hkv·D]
        let vh = g.haloRows(v, rows: ctx.haloRows, exchange: share.exchange)              // [R + T, Hkv·D]
        let received = kh.shape[0] - k.shape[0]
        let a = g.attention(q: g.padRows(q, leading: received), k: kh, v: vh, heads: heads, kvHeads: kvHeads,
                            headDim: headDim, layout: ctx.layout, scale: scale, keyOnlyRows: received,
                            bf16: attentionInBF16)                                         // [R + T, H·D]
        return g.dropRows(a, leading: received)                                            // [T, H·D]
    }

    /// S2 roll: the second half of the (KV-expanded) heads shifted by half a group.
    func rolledAttention(_ g: Graph, _ q: Variable, _ k: Variable, _ v: Variable, group: Int,
                         _ ctx: ForwardContext) -> Variable {
        let shifted = (heads / 2)..<heads, rep = heads / kvHeads
        func roll(_ x: Variable, by shift: Int) -> Variable {
            g.rollRows(x, heads: shifted, headDim: headDim, shift: shift)
        }
        func expand(_ x: Variable) -> Variable {                                          // [T, H·D]
            g.repeatKV(x, kvHeads: kvHeads, group: rep, headDim: headDim)
        }
        let a = g.attention(q: roll(q, by: group / 2), k: roll(expand(k), by: group / 2),
                            v: roll(expand(v), by: group / 2),
                            heads: heads, kvHeads: heads, headDim: headDim, layout: ctx.layout, scale: scale,
                            bf16: attentionInBF16)
        return roll(a, by: -group / 2)
    }
}

public final class LlamaMLP {
    /// The separate projections, or nil where one fused `gate_up_proj` computes both (Phi-3: gate's columns first).
    public let gate_proj, up_proj, gate_up_proj: Linear?
    public let down_proj: Linear
    let inner: Int
    /// silu (SwiGLU) or Gemma's gelu_pytorch_tanh (GeGLU).
    let activation: GatedActivation

    init(_ c: LlamaConfig, path: String) {
        let hidden = c.hiddenSize, fused = c.fusedProjections
        inner = c.intermediateSize; activation = c.activation
        func projection(_ name: String, _ out: Int) -> Linear {
            Linear(path + "." + name, inFeatures: hidden, outFeatures: out, bias: c.mlpBias)
        }
        gate_proj = fused ? nil : projection("gate_proj", inner)
        up_proj = fused ? nil : projection("up_proj", inner)
        gate_up_proj = fused ? projection("gate_up_proj", 2 * inner) : nil
        down_proj = Linear(path + ".down_proj", inFeatures: inner, outFeatures: hidden, bias: c.mlpBias)
    }

    /// Rows per slice where the MLP runs in slices (evaluation, checkpointed training): its [rows, intermediate]
    /// activations exist for 1024 tokens at a time. 1024 is also the shorter length the memory planner probes,
    /// so that its probes see the slice's fixed size (docs/CONVENTIONS.md §13). Tests set it small.
    public var rowsPerSlice = 1024

    var modules: [ParameterModule] { gate_up_proj.map { [$0, down_proj] } ?? [gate_proj!, up_proj!, down_proj] }

    func callAsFunction(_ g: Graph, _ x: Variable) -> Variable {
        if let gate_up_proj {
            let y = gate_up_proj(g, x)                                                     // [T, 2·I]
            return down_proj(g, g.gated(activation, gate: g.columns(y, 0..<inner),
                                        up: g.columns(y, inner..<(2 * inner))))
        }
        return down_proj(g, g.gated(activation, gate: gate_proj!(g, x), up: up_proj!(g, x)))  // [T, C]
    }
}

/// LlamaDecoderLayer, or Gemma3DecoderLayer: the same blocks with norms also after attention and the MLP. The norm
/// before the MLP is Llama's `post_attention_layernorm` and Gemma's `pre_feedforward_layernorm`; Gemma's
/// `post_attention_layernorm` normalises the attention output.
public final class LlamaDecoderLayer {
    public let self_attn: LlamaAttention
    public let mlp: LlamaMLP
    public let input_layernorm, post_attention_layernorm: LlamaRMSNorm
    /// Gemma 3's extra norms (nil for the other families).
    public let pre_feedforward_layernorm, post_feedforward_layernorm: LlamaRMSNorm?

    init(_ c: LlamaConfig, index: Int) {
        let path = "model.layers.\(index)"
        func norm(_ name: String) -> LlamaRMSNorm { LlamaRMSNorm(path + "." + name, size: c.hiddenSize, c) }
        self_attn = LlamaAttention(c, path: path + ".self_attn", layer: index)
        mlp = LlamaMLP(c, path: path + ".mlp")
        input_layernorm = norm("input_layernorm")
        post_attention_layernorm = norm("post_attention_layernorm")
        pre_feedforward_layernorm = c.isGemma3 ? norm("pre_feedforward_layernorm") : nil
        post_feedforward_layernorm = c.isGemma3 ? norm("post_feedforward_layernorm") : nil
    }

    /// In the order of HF's state dict (its modules' declaration order).
    var modules: [ParameterModule] {
        self_attn.modules + mlp.modules + [input_layernorm, post_attention_layernorm]
            + [pre_feedforward_layernorm, post_feedforward_layernorm].compactMap { $0 }
    }

    func callAsFunction(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        g.rowwise(attentionBlock(g, x, ctx), rows: mlp.rowsPerSlice, mlpBlock)
    }

    /// x + attention(norm(x)): tokens see each other here.
    func attentionBlock(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        residualAttention(g, x) { self.self_attn(g, $0, ctx) }
    }

    /// x + attend(input_layernorm(x)), the attention output normalised where the family does (Gemma).
    func residualAttention(_ g: Graph, _ x: Variable, attend: (Variable) -> Variable) -> Variable {
        let a = attend(input_layernorm(g, x))                                              // [T, C]
        return g.add(x, pre_feedforward_layernorm == nil ? a : post_attention_layernorm(g, a))
    }

    /// h + mlp(norm(h)): row-wise (each token alone), so it can run on slices of rows.
    func mlpBlock(_ g: Graph, _ h: Variable) -> Variable {
        let m = mlp(g, (pre_feedforward_layernorm ?? post_attention_layernorm)(g, h))      // [T, C]
        return g.add(h, post_feedforward_layernorm.map { $0(g, m) } ?? m)
    }

    /// The layer under activation checkpointing: the attention block is replayed whole, the MLP block in slices
    /// of rows (its [T, intermediate] activations are the widest of the step).
    func checkpointed(_ g: Graph, _ x: Variable, _ ctx: ForwardContext) -> Variable {
        g.checkpoint([x], { g, x in self.attentionBlock(g, x[0], ctx) }, rowwiseTail: mlpBlock,
                     tailRows: mlp.rowsPerSlice)
    }
}

public final class LlamaModel {
    public let embed_tokens: Embedding
    public let layers: [LlamaDecoderLayer]
    public let norm: LlamaRMSNorm

    init(_ c: LlamaConfig) {
        embed_tokens = Embedding("model.embed_tokens", count: c.vocabSize, dimension: c.hiddenSize)
        layers = (0..<c.numHiddenLayers).map { LlamaDecoderLayer(c, index: $0) }
        norm = LlamaRMSNorm("model.norm", size: c.hiddenSize, c)
        embeddingScale = c.embeddingScale
    }

    /// Gemma's √hidden on the embeddings (Gemma3TextScaledWordEmbedding), or nil.
    let embeddingScale: Float?

    /// The tokens' embeddings [T, C], scaled where the family does.
    func embed(_ g: Graph, _ ids: [Int32]) -> Variable {
        let e = embed_tokens(g, ids)                                                        // [T, C]
        return embeddingScale.map { g.scale(e, $0) } ?? e
    }

    var modules: [ParameterModule] { [embed_tokens] + layers.flatMap(\.modules) + [norm] }

    /// Final hidden states [T, C] after the last norm.
    func callAsFunction(_ g: Graph, _ ids: [Int32], _ ctx: ForwardContext) -> Variable {
        var h = embed(g, ids)                                                               // [T, C]
        for layer in layers {
            h = ctx.checkpointLayers ? layer.checkpointed(g, h, ctx) : layer(g, h, ctx)
        }
        return norm(g, h)
    }
}

public final class LlamaForCausalLM {
    public let config: LlamaConfig
    public let model: LlamaModel
    /// The LM head [vocab, hidden]; with tied embeddings its weight is the embedding table.
    public let lm_head: Linear

    public init(config: LlamaConfig) {
        self.config = config
        model = LlamaModel(config)
        let embed = model.embed_tokens
        lm_head = Linear("lm_head", inFeatures: config.hiddenSize, outFeatures: config.vocabSize, bias: false,
                         tiedWeight: config.tieWordEmbeddings ? { embed.weight } : nil)
    }

    /// The model's structure: every module that owns parameters, under its HF path, in the order of
    /// HF's state dict. Parameter names and shapes, LoRA targets, trainable extras, checkpoint and
    /// peft names all derive from this walk. A tied LM head is left out: its weight is the
    /// embedding table, which HF (and this walk) lists once.
    public func modules() -> [ParameterModule] {
        model.modules + (config.tieWordEmbeddings ? [] : [lm_head])
    }

    /// Every parameter under its HF name.
    public func namedParameters() -> [(String, Variable)] { modules().flatMap(\.parameters) }

    /// Every parameter's HF name and shape, in `namedParameters()` order, without allocating them
    /// (merging streams tensors one at a time).
    public func parameterShapes() -> [(String, [Int])] { modules().flatMap(\.parameterShapes) }

    /// RoPE tables for `positions` with the config's scaling kind, whose frequencies are those of a sequence whose
    /// positions are `whole` (a share of a sequence keeps the whole's; default: `positions` themselves).
    /// `local`: Gemma 3's local layers' tables.
    public func ropeTables(positions: [Int], of whole: [Int]? = nil, local: Bool = false) -> RopeTables {
        let f = ropeFrequencies(sequenceLength: ((whole ?? positions).max() ?? 0) + 1, local: local)
        return RopeTables(positions: positions, invFreq: f.invFreq, attentionFactor: f.attentionFactor)
    }

    /// The config's rotary frequencies for a sequence whose largest position is `sequenceLength` − 1; `local`: those
    /// of Gemma 3's local layers (their own base, no scaling).
    public func ropeFrequencies(sequenceLength: Int, local: Bool = false) -> RopeFrequencies {
        RopeFrequencies(scaling: local ? nil : config.ropeScaling,
                        theta: local ? config.localRopeTheta ?? config.ropeTheta : config.ropeTheta,
                        rotaryDim: config.rotaryDim, maxPositionEmbeddings: config.maxPositionEmbeddings,
                        sequenceLength: sequenceLength)
    }


    /// Forward context for one sequence: positions 0..<T (restarting at each document start), causal
    /// attention (inside documents when given) or S2-Attn's groups. With a `share` (sequence parallelism), the
    /// context of this rank's rows of the sequence and the halo before them (docs/CONVENTIONS.md §17).
    public func context(length t: Int, documentStarts: [Int]? = nil, attention: AttentionMode = .full,
                        checkpointLayers: Bool = false, share: SequenceShare? = nil) throws -> ForwardContext {
        let documents = try Self.documents(length: t, starts: documentStarts)
        var positions = Array(0..<t)
        for d in documents ?? [] { for i in d { positions[i] = i - d.lowerBound } }
        let (layout, rollGroup) = try attentionLayout(length: t, documents: documents, attention: attention)
        guard let share else {
            var ctx = ForwardContext(rope: ropeTables(positions: positions), layout: layout,
                                     checkpointLayers: checkpointLayers, rollGroup: rollGroup, share: nil, haloRows: 0)
            if config.hasLocalLayers {
                ctx.localRope = ropeTables(positions: positions, local: true)
                ctx.localLayout = try segmentLayout(length: t, documents: documents, attention: .full).0
                    .sliding(config.slidingWindow)
            }
            return ctx
        }
        guard !config.hasLocalLayers else {
            throw LongTuneError("sequence parallelism: Gemma 3's local (sliding-window) layers are not supported under "
                                + "it; train on one rank per sequence (attention.sequence_parallel: 1)")
        }
        let halo = try SequenceShare.haloRows(length: t, attention: attention, ranks: share.ranks,
                                              option: "sequence parallelism")
        let first = share.exchange.hasPrevious ? share.rows.lowerBound - halo : share.rows.lowerBound
        return ForwardContext(rope: ropeTables(positions: Array(positions[share.rows]), of: positions),
                              layout: try layout.window(first..<share.rows.upperBound),
                              checkpointLayers: checkpointLayers, rollGroup: nil, share: share, haloRows: halo)
    }

    /// Packed documents as segments of 0..<t, or nil for one document.
    static func documents(length t: Int, starts: [Int]?) throws -> [Range<Int>]? {
        guard let starts, starts != [0] else { return nil }
        guard starts.first == 0, zip(starts, starts.dropFirst()).allSatisfy({ $0 < $1 }), starts.last! < t else {
            throw LongTuneError("document starts \(starts.prefix(8)) must begin at 0 and increase within 0..<\(t)")
        }
        return AttentionLayout.segments(from: starts, length: t)
    }

    /// Which keys each query of one unpacked sequence sees (no RoPE tables are built: FLOP counts use it).
    public func attentionLayout(length t: Int, attention: AttentionMode) throws -> AttentionLayout {
        try attentionLayout(length: t, documents: nil, attention: attention).0
    }

    /// Query × key pairs the layers keep together for one unpacked sequence (FLOP counts): the global layers' layout
    /// and, on Gemma 3's local layers, the causal window.
    public func keptScores(length t: Int, attention: AttentionMode) throws -> Double {
        let global = try attentionLayout(length: t, attention: attention).keptScores
        let locals = (0..<config.numHiddenLayers).filter(config.isLocal).count
        guard locals > 0 else { return global * Double(config.numHiddenLayers) }
        let local = try segmentLayout(length: t, documents: nil, attention: .full).0.sliding(config.slidingWindow)
        return global * Double(config.numHiddenLayers - locals) + local.keptScores * Double(locals)
    }

    /// Which keys each query sees (within the model's sliding window, where it has one); with S2's `roll` variant also
    /// the group size to roll by.
    func attentionLayout(length t: Int, documents: [Range<Int>]?,
                         attention: AttentionMode) throws -> (AttentionLayout, rollGroup: Int?) {
        let (layout, roll) = try segmentLayout(length: t, documents: documents, attention: attention)
        return (layout.sliding(config.globalWindow), roll)
    }

    func segmentLayout(length t: Int, documents: [Range<Int>]?,
                       attention: AttentionMode) throws -> (AttentionLayout, rollGroup: Int?) {
        let h = config.numAttentionHeads
        switch attention {
        case .full:
            let segments = documents ?? [0..<t]
            return (try AttentionLayout(length: t, heads: h, groups: [.init(heads: 0..<h, segments: segments)]), nil)
        case .s2(let ratio, roll: false):
            let g = try AttentionLayout.s2GroupSize(length: t, ratio: ratio)
            return (try AttentionLayout.shiftedShort(length: t, heads: h, groupSize: g, within: documents), nil)
        case .s2(let ratio, roll: true):
            let g = try AttentionLayout.s2GroupSize(length: t, ratio: ratio)
            guard documents == nil else {
                throw LongTuneError("S2-Attn roll variant cannot keep packed documents apart (it wraps tokens around); "
                                    + "use shift: boundaries")
            }
            let groups = stride(from: 0, to: t, by: g).map { $0..<($0 + g) }
            return (try AttentionLayout(length: t, heads: h, groups: [.init(heads: 0..<h, segments: groups)]), g)
        }
    }

    /// Final hidden states [T, C].
    public func hiddenStates(_ g: Graph, ids: [Int32], context: ForwardContext) -> Variable {
        model(g, ids, context)
    }

    /// Logits [T, V] without recording (for evaluation and tests).
    public func logits(ids: [Int32]) throws -> Tensor {
        let h = hiddenStates(Graph(recording: false), ids: ids, context: try context(length: ids.count)).value
        let z = Tensor(uninitialized: [ids.count, config.vocabSize])
        headWeight.logits(h.data, rows: ids.count, into: z.data)
        return z
    }

    /// The LM head's weight for its products: the frozen 16-bit table when a quantized base keeps its tied
    /// embedding in 16 bits (docs/CONVENTIONS.md §14) or the head is in bf16 for bf16 compute (§15), else
    /// `lm_head.weight`. The LM head has no adapter or bias.
    public var headWeight: HeadWeight {
        if config.tieWordEmbeddings, let table = model.embed_tokens.frozen16 { return .frozen16(table) }
        if !config.tieWordEmbeddings, let table = lm_head.quantized as? HalfMatrix { return .frozen16(table) }
        return .dense(lm_head.weight)
    }

    /// Throws unless every id is inside the vocabulary.
    public func checkTokens(_ ids: [Int32]) throws {
        let vocab = config.vocabSize
        if let bad = ids.firstIndex(where: { $0 < 0 || Int($0) >= vocab }) {
            throw LongTuneError("token id \(ids[bad]) at position \(bad) is outside the model's vocabulary "
                                + "0..<\(vocab)")
        }
    }

    /// Loss of each next-token prediction without recording: entry i is −log p(ids[i+1] | ids[0…i]);
    /// T − 1 entries.
    public func tokenLosses(ids: [Int32], context: ForwardContext) throws -> [Double] {
        try checkTokens(ids)
        let h = hiddenStates(Graph(recording: false), ids: ids, context: context).value
        let targets = try CausalLM.targets(ids: ids)
        return Array(LMHeadLoss.perToken(hidden: h, weight: headWeight, targets: targets).dropLast())
    }

    /// transformers' causal-LM loss over `CausalLM.targets`: mean over the counted targets. Under sequence
    /// parallelism (`context.share`) the ids are the whole sequence's; this rank scores its rows' targets (the
    /// last row's target is the next rank's first token) and divides by the whole sequence's count, so the ranks'
    /// losses add up to the sequence's (docs/CONVENTIONS.md §17).
    public func loss(_ g: Graph, ids: [Int32], labels: [Int32]? = nil, documentStarts: [Int]? = nil,
                     context: ForwardContext) throws -> Variable {
        try checkTokens(ids)
        let targets = try CausalLM.targets(ids: ids, labels: labels, documentStarts: documentStarts)
        guard let rows = context.share?.rows else {
            return g.lmHeadCrossEntropy(hiddenStates(g, ids: ids, context: context), weight: headWeight,
                                        targets: targets)
        }
        let counted = targets.filter { $0 != CausalLM.ignoreIndex }.count
        return g.lmHeadCrossEntropy(hiddenStates(g, ids: Array(ids[rows]), context: context), weight: headWeight,
                                    targets: Array(targets[rows]), meanOver: counted)
    }
}

/// transformers' causal-LM targets (docs/CONVENTIONS.md §8): position t is scored on token t+1 of
/// the labels (the ids unless given); −100 is ignored; the last position has no target; and the
/// first token of a packed document is not predicted from the document before it.
public enum CausalLM {
    public static let ignoreIndex: Int32 = -100

    /// One target per position (T entries, the last always ignored). Training, evaluation and
    /// perplexity all score through this.
    public static func targets(ids: [Int32], labels: [Int32]? = nil, documentStarts: [Int]? = nil) throws -> [Int32] {
        if let labels, labels.count != ids.count {
            throw LongTuneError("labels have \(labels.count) entries for \(ids.count) tokens")
        }
        var next = labels ?? ids
        for s in documentStarts ?? [] where s > 0 && s < next.count { next[s] = ignoreIndex }
        return Array(next.dropFirst()) + [ignoreIndex]
    }
}
