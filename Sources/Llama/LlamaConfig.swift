import Engine
import Foundation

/// The model's config.json (a Codable mirror of transformers' LlamaConfig). Reads both the
/// transformers v4 style (top-level `rope_theta`, `rope_scaling`) and the v5 style
/// (`rope_parameters`); Llama-shaped families (Mistral, Qwen2, Qwen3, Phi-3, Gemma 3; docs/CONVENTIONS.md §22)
/// share the layout.
public struct LlamaConfig: Codable, Equatable, Sendable {
    public var architectures: [String]?
    public var modelType: String?
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var partialRotaryFactor: Double
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var mlpBias: Bool
    /// Qwen2 puts biases on q/k/v but not on o_proj.
    public var outputProjectionBias: Bool
    public var hiddenAct: String
    /// Mistral's `sliding_window` W: a query sees only the W latest keys (itself included); nil: every key.
    public var slidingWindow: Int?
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// Kept so a merged directory reloads: Phi3Config's default (32000) is outside a small vocabulary.
    public var padTokenId: Int?
    public var torchDtype: String?
    /// Gemma 3: each layer's attention kind (`layer_types`); local (sliding) layers see `slidingWindow` keys and
    /// rotate by `localRopeTheta` without scaling. nil: every layer alike (Mistral's window, if any, on all).
    public var layerTypes: [LayerAttention]?
    /// Gemma 3's `rope_local_base_freq`: the local layers' RoPE base.
    public var localRopeTheta: Double?
    /// Gemma 3's `query_pre_attn_scalar` s: attention scores scaled by 1/√s instead of 1/√head_dim.
    public var queryPreAttnScalar: Double?
    /// Gemma's logit soft-capping (null in Gemma 3's configs); refused by validate() where set.
    var finalLogitSoftcapping, attnLogitSoftcapping: Double?
    /// Gemma 3's `use_bidirectional_attention` (an embedding model's setting); refused where true.
    var bidirectional = false

    /// A layer's attention in `layer_types`.
    public enum LayerAttention: String, Codable, Sendable {
        case full = "full_attention", sliding = "sliding_attention"
    }

    public var rotaryDim: Int { Int(Double(headDim) * partialRotaryFactor) }
    /// Qwen's `use_sliding_window: true` (windows on some layers only), which the model code does not implement.
    var useSlidingWindow = false
    /// Gemma 3 v5 `rope_parameters.sliding_attention`: validate() refuses scaling there (local layers rotate plainly).
    var localRopeScaling: RopeScaling?

    /// The `architectures` the model code implements: Llama and the families of its shape.
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                                "Qwen3ForCausalLM", "Phi3ForCausalLM", "Gemma3ForCausalLM"]

    /// Qwen3 and Gemma 3 normalise each head's query and key (RMSNorm over head_dim: `q_norm`, `k_norm`) before RoPE.
    public var queryKeyNorms: Bool {
        modelType == "qwen3" || architectures?.first == "Qwen3ForCausalLM" || isGemma3
    }

    /// Gemma 3's text model (docs/CONVENTIONS.md §22): (1 + w) norms, also after attention and the MLP, embeddings
    /// scaled by √hidden, GeGLU, local and global layers.
    public var isGemma3: Bool { modelType == "gemma3_text" || architectures?.first == "Gemma3ForCausalLM" }

    /// What an RMSNorm adds to its stored weight: Gemma's norms scale by (1 + w).
    public var normWeightOffset: Float { isGemma3 ? 1 : 0 }

    /// The factor on the token embeddings (Gemma: √hidden_size), or nil.
    public var embeddingScale: Float? { isGemma3 ? Float(hiddenSize).squareRoot() : nil }

    /// Attention's score scale: 1/√query_pre_attn_scalar where set (Gemma), else 1/√head_dim.
    public var attentionScale: Float { 1 / Float(queryPreAttnScalar ?? Double(headDim)).squareRoot() }

    /// Whether layer `l` is a local (sliding-window) layer of a model with both kinds (Gemma 3).
    public func isLocal(layer l: Int) -> Bool { layerTypes?[l] == .sliding }

    /// Whether some layers are local (Gemma 3) and need their own RoPE tables and window.
    public var hasLocalLayers: Bool { layerTypes?.contains(.sliding) == true }

    /// Gemma 3's layer kinds given only a pattern P (v4's `sliding_window_pattern`, a GGUF file's
    /// attention.sliding_window_pattern): every P-th layer global, the others local.
    public static func layerTypes(layers n: Int, globalEvery p: Int) -> [LayerAttention] {
        (0..<n).map { ($0 + 1) % max(p, 1) == 0 ? .full : .sliding }
    }

    /// The pattern Gemma3TextConfig and llama.cpp assume when a config or file gives none.
    public static let defaultGlobalEvery = 6
    /// The local layers' RoPE base Gemma3TextConfig and llama.cpp assume when a config or file gives none.
    public static let defaultLocalRopeTheta = 10000.0

    /// The same model `n` layers deep (the planner's probes): Gemma 3's layer kinds repeated or cut to n, the last
    /// made global where the model has global layers, so that a probe has both kinds.
    public func withLayers(_ n: Int) -> LlamaConfig {
        var c = self
        c.numHiddenLayers = n
        if let all = layerTypes, !all.isEmpty, n > 0 {
            c.layerTypes = (0..<n).map { all[$0 % all.count] }
            if all.contains(.full) { c.layerTypes![n - 1] = .full }
        }
        return c
    }

    /// The window on the other layers: Mistral's and Phi-3's (every layer), none where only local layers have one.
    public var globalWindow: Int? { layerTypes == nil ? slidingWindow : nil }

    /// The MLP's gated activation from `hidden_act` (Gemma: `hidden_activation`).
    public var activation: GatedActivation { GatedActivation(hfName: hiddenAct) ?? .silu }

    /// Phi-3 fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`.
    public var fusedProjections: Bool { modelType == "phi3" || architectures?.first == "Phi3ForCausalLM" }

    enum CodingKeys: String, CodingKey {
        case architectures, modelType = "model_type", vocabSize = "vocab_size", hiddenSize = "hidden_size"
        case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
        case headDim = "head_dim", maxPositionEmbeddings = "max_position_embeddings", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
        case partialRotaryFactor = "partial_rotary_factor", tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window"
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case torchDtype = "torch_dtype", dtype
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case layerTypes = "layer_types", slidingWindowPattern = "sliding_window_pattern"
        case localRopeTheta = "rope_local_base_freq", queryPreAttnScalar = "query_pre_attn_scalar"
        case hiddenActivation = "hidden_activation", finalLogitSoftcapping = "final_logit_softcapping"
        case attnLogitSoftcapping = "attn_logit_softcapping", bidirectional = "use_bidirectional_attention"
        case fullAttention = "full_attention", slidingAttention = "sliding_attention"
    }

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int? = nil, maxPositionEmbeddings: Int, rmsNormEps: Double = 1e-5,
                ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil, tieWordEmbeddings: Bool = false) {
        self.architectures = ["LlamaForCausalLM"]; self.modelType = "llama"
        self.vocabSize = vocabSize; self.hiddenSize = hiddenSize; self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers; self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads; self.headDim = headDim ?? hiddenSize / max(numAttentionHeads, 1)
        self.maxPositionEmbeddings = maxPositionEmbeddings; self.rmsNormEps = rmsNormEps; self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling; self.partialRotaryFactor = 1; self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = false; self.mlpBias = false; self.outputProjectionBias = false; self.hiddenAct = "silu"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        architectures = try c.decodeIfPresent([String].self, forKey: .architectures)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
        numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
        numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
        numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
        // validate() rejects non-positive head counts; no division by zero before it runs.
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? hiddenSize / max(numAttentionHeads, 1)
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6
        // v5 keeps theta and scaling in rope_parameters (Gemma 3: one per layer type); v4 at the top level.
        let byLayerType = (try? c.nestedContainer(keyedBy: CodingKeys.self, forKey: .ropeParameters))?
            .contains(.fullAttention) ?? false
        let perLayerType = byLayerType ? try c.decode([String: RopeScaling].self, forKey: .ropeParameters) : nil
        let params = try perLayerType?[LayerAttention.full.rawValue]
            ?? c.decodeIfPresent(RopeScaling.self, forKey: .ropeParameters)
        let legacy = try c.decodeIfPresent(RopeScaling.self, forKey: .ropeScaling)
        var theta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta)
        var partial = try c.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
        var local = try c.decodeIfPresent(Double.self, forKey: .localRopeTheta)
        if c.contains(.ropeParameters) {   // v5 may keep these two only inside rope_parameters
            var raw = try c.nestedContainer(keyedBy: CodingKeys.self, forKey: .ropeParameters)
            if perLayerType != nil {
                let sliding = try raw.nestedContainer(keyedBy: CodingKeys.self, forKey: .slidingAttention)
                local = try local ?? sliding.decodeIfPresent(Double.self, forKey: .ropeTheta)
                raw = try raw.nestedContainer(keyedBy: CodingKeys.self, forKey: .fullAttention)
            }
            theta = try theta ?? raw.decodeIfPresent(Double.self, forKey: .ropeTheta)
            partial = try partial ?? raw.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
        }
        ropeTheta = theta ?? 10000
        localRopeTheta = local ?? (modelType == "gemma3_text" ? Self.defaultLocalRopeTheta : nil)
        localRopeScaling = perLayerType?[LayerAttention.sliding.rawValue].flatMap { $0.kind == .default ? nil : $0 }
        var scaling = params ?? legacy
        if scaling?.kind == .default { scaling = nil }
        // A top-level original_max_position_embeddings wins over rope_parameters' (transformers'
        // standardize_rope_params; Phi-3 configs keep it there, and Phi3Config defaults it to 4096).
        if scaling != nil, let top = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings) {
            scaling!.originalMaxPositionEmbeddings = top
        }
        ropeScaling = scaling
        partialRotaryFactor = partial ?? 1
        let family = modelType ?? "llama"
        // Gemma3TextConfig ties them by default, and Gemma 3's own config.json files leave the key out.
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? (family == "gemma3_text")
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? (family == "qwen2")
        outputProjectionBias = family == "qwen2" ? false : attentionBias
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
            ?? c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar)
        finalLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .finalLogitSoftcapping)
        attnLogitSoftcapping = try c.decodeIfPresent(Double.self, forKey: .attnLogitSoftcapping)
        // Other families' v5 configs list layer_types too (all full_attention, or Qwen's use_sliding_window layers).
        layerTypes = family == "gemma3_text" ? try c.decodeIfPresent([LayerAttention].self, forKey: .layerTypes) : nil
        bidirectional = try c.decodeIfPresent(Bool.self, forKey: .bidirectional) ?? false
        if layerTypes == nil, family == "gemma3_text" {   // Gemma3TextConfig: every pattern-th layer global
            let pattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern) ?? Self.defaultGlobalEvery
            layerTypes = Self.layerTypes(layers: numHiddenLayers, globalEvery: pattern)
        }
        // Mistral and Phi-3 apply sliding_window to every layer, Gemma 3 to its local layers; Qwen2/Qwen3 configs carry
        // one that applies only with use_sliding_window (refused by validate(): their per-layer windows are not
        // implemented).
        let everyLayer = ["mistral", "phi3", "gemma3_text"].contains(family)
        let windowed = try everyLayer || (c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false)
        useSlidingWindow = !everyLayer && windowed
        slidingWindow = windowed ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : nil
        bosTokenId = try? c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenId = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId)
        padTokenId = try? c.decodeIfPresent(Int.self, forKey: .padTokenId)
        torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype)
            ?? c.decodeIfPresent(String.self, forKey: .dtype)
    }

    /// Writes both transformers styles (docs/CONVENTIONS.md §3): v4 `rope_scaling` + top-level `rope_theta`,
    /// and v5 `rope_parameters`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(architectures ?? ["LlamaForCausalLM"], forKey: .architectures)
        try c.encode(modelType ?? "llama", forKey: .modelType)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        if let localRopeTheta {   // Gemma 3: v4's local base, v5's parameters per layer type
            try c.encode(localRopeTheta, forKey: .localRopeTheta)
            var byType = c.nestedContainer(keyedBy: CodingKeys.self, forKey: .ropeParameters)
            var full = byType.nestedContainer(keyedBy: RopeScaling.CodingKeys.self, forKey: .fullAttention)
            try Self.encodeRopeParameters(theta: ropeTheta, scaling: ropeScaling, into: &full)
            var sliding = byType.nestedContainer(keyedBy: RopeScaling.CodingKeys.self, forKey: .slidingAttention)
            try Self.encodeRopeParameters(theta: localRopeTheta, scaling: nil, into: &sliding)
        } else {
            var params = c.nestedContainer(keyedBy: RopeScaling.CodingKeys.self, forKey: .ropeParameters)
            try Self.encodeRopeParameters(theta: ropeTheta, scaling: ropeScaling, into: &params)
        }
        // Also at the top level, where transformers looks first (Phi3Config would otherwise assume 4096).
        try c.encodeIfPresent(ropeScaling?.originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
        if partialRotaryFactor != 1 { try c.encode(partialRotaryFactor, forKey: .partialRotaryFactor) }
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encode(hiddenAct, forKey: isGemma3 ? .hiddenActivation : .hiddenAct)
        try c.encodeIfPresent(slidingWindow, forKey: .slidingWindow)
        try c.encodeIfPresent(layerTypes, forKey: .layerTypes)
        try c.encodeIfPresent(queryPreAttnScalar, forKey: .queryPreAttnScalar)
        try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
        try c.encodeIfPresent(eosTokenId, forKey: .eosTokenId)
        try c.encodeIfPresent(padTokenId, forKey: .padTokenId)
        try c.encodeIfPresent(torchDtype, forKey: .torchDtype)
    }

    /// One `rope_parameters` entry: the base and the scaling kind's fields ("default" without scaling).
    static func encodeRopeParameters(theta: Double, scaling: RopeScaling?,
                                     into c: inout KeyedEncodingContainer<RopeScaling.CodingKeys>) throws {
        try c.encode(theta, forKey: .ropeTheta)
        if let scaling { try scaling.encodeFields(into: &c) } else { try c.encode("default", forKey: .kind) }
    }

    /// Rejects what the model code does not implement, naming the field.
    public func validate(source: String) throws {
        func fail(_ field: String, _ why: String) -> LongTuneError { LongTuneError("\(source): \(field): \(why)") }
        if let a = architectures?.first, !Self.supportedArchitectures.contains(a) {
            throw fail("architectures",
                       "\(a) is not supported (\(Self.supportedArchitectures.joined(separator: ", ")) are)")
        }
        guard GatedActivation(hfName: hiddenAct) != nil else {
            throw fail(isGemma3 ? "hidden_activation" : "hidden_act",
                       "\"\(hiddenAct)\" is not supported (\(GatedActivation.hfNames.joined(separator: ", ")) are)")
        }
        for (field, cap) in [("final_logit_softcapping", finalLogitSoftcapping),
                             ("attn_logit_softcapping", attnLogitSoftcapping)] where cap != nil {
            throw fail(field, "soft-capping (Gemma 2) is not supported; Gemma 3 sets it to null")
        }
        guard !bidirectional else {
            throw fail("use_bidirectional_attention", "true (an embedding model) is not supported: LongTune trains "
                       + "causal language models")
        }
        if let types = layerTypes, types.count != numHiddenLayers {
            throw fail("layer_types", "has \(types.count) entries for \(numHiddenLayers) layers")
        }
        if hasLocalLayers, slidingWindow == nil {
            throw fail("sliding_window", "is needed: layer_types has sliding_attention layers")
        }
        if let s = localRopeScaling {
            throw fail("rope_parameters.sliding_attention", "scaling (\(s.kind.rawValue)) on the local layers is not "
                       + "supported: they rotate by their own base only; scale the full_attention layers")
        }
        if let base = localRopeTheta, !(base.isFinite && base > 1) {
            throw fail("rope_local_base_freq", "must be a number above 1, got \(base)")
        }
        if let s = queryPreAttnScalar, !(s.isFinite && s > 0) {
            throw fail("query_pre_attn_scalar", "must be positive, got \(s)")
        }
        guard !useSlidingWindow else {
            throw fail("use_sliding_window", "true is not supported (sliding windows on some layers only); set it "
                       + "to false to train and evaluate with full attention on every layer")
        }
        if let w = slidingWindow, w < 1 {
            throw fail("sliding_window", "must be a positive number of tokens, got \(w)")
        }
        if fusedProjections, ropeScaling?.kind == .yarn {   // docs/CONVENTIONS.md §22
            throw fail("rope_scaling", "yarn on a Phi-3 model: transformers' Phi3Config reads rope_type \"yarn\" as "
                       + "longrope, so the merged model would not reload as trained; use longrope (short_factor, "
                       + "long_factor) or linear (in the recipe's model.rope_scaling or --rope-scaling)")
        }
        // Sizes first: the checks after divide by them.
        for (name, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize),
                          ("intermediate_size", intermediateSize), ("num_hidden_layers", numHiddenLayers),
                          ("num_attention_heads", numAttentionHeads), ("num_key_value_heads", numKeyValueHeads),
                          ("head_dim", headDim), ("max_position_embeddings", maxPositionEmbeddings)]
            where v <= 0 || v > 1 << 24 {
            throw fail(name, "must be a positive size up to 2^24, got \(v)")
        }
        // Each layer is a set of objects built before any tensor is read: a corrupt count must not build millions.
        guard numHiddenLayers <= 1024 else {
            throw fail("num_hidden_layers",
                       "\(numHiddenLayers) layers is not a real model (the largest Llama has 126); "
                       + "the file is corrupt")
        }
        guard rmsNormEps.isFinite, rmsNormEps > 0 else {
            throw fail("rms_norm_eps", "must be positive, got \(rmsNormEps)")
        }
        guard ropeTheta.isFinite, ropeTheta > 1 else {
            throw fail("rope_theta", "must be a number above 1, got \(ropeTheta)")
        }
        guard partialRotaryFactor.isFinite, partialRotaryFactor > 0, partialRotaryFactor <= 1 else {
            throw fail("partial_rotary_factor", "must be in (0, 1], got \(partialRotaryFactor)")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw fail("num_key_value_heads",
                       "\(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)")
        }
        guard rotaryDim > 0, rotaryDim % 2 == 0, rotaryDim <= headDim else {
            throw fail("partial_rotary_factor",
                       "gives rotary dimension \(rotaryDim) for head_dim \(headDim); it must be even and ≤ head_dim")
        }
        try ropeScaling?.validate(rotaryDim: rotaryDim, where: "\(source): rope_scaling")
    }

    /// The config with RoPE scaling replaced by `override` (kind `default` removes scaling; nil keeps
    /// the config's own). The one rule behind recipes' `model.rope_scaling` and `--rope-scaling`.
    public func withRopeScaling(_ override: RopeScaling?) -> LlamaConfig {
        guard let override else { return self }
        var c = self
        c.ropeScaling = override.kind == .default ? nil : override
        return c
    }

    /// The config as LongTune writes it (sorted keys): checkpoints record it, and resuming or merging
    /// onto a base with another fingerprint is refused.
    public var fingerprint: String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: (try? enc.encode(self)) ?? Data(), as: UTF8.self)
    }

    /// Whether a recorded fingerprint (by this or an earlier LongTune, whose encoder wrote fewer keys) names this
    /// model: both sides re-encoded by today's encoder, the pad token aside (recorded since Phi-3).
    public func matches(fingerprint recorded: String) -> Bool {
        guard var other = try? JSONDecoder().decode(LlamaConfig.self, from: Data(recorded.utf8)) else { return false }
        var mine = self
        other.padTokenId = nil; mine.padTokenId = nil
        return other.fingerprint == mine.fingerprint
    }

    public static func load(_ url: URL) throws -> LlamaConfig {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw LongTuneError("\(url.path): cannot read the model config (\(error.localizedDescription)); "
                                + "a model directory needs config.json")
        }
        let config: LlamaConfig
        do { config = try JSONDecoder().decode(LlamaConfig.self, from: data) } catch let e as DecodingError {
            throw LongTuneError("\(url.path): \(describe(e))")
        }
        try config.validate(source: url.path)
        return config
    }
}

/// A one-line account of a JSON decoding error: the key path and what was wrong.
public func describe(_ e: DecodingError) -> String {
    func path(_ p: [CodingKey]) -> String {
        p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    switch e {
    case .keyNotFound(let k, let ctx): return "missing field \"\(path(ctx.codingPath + [k]))\""
    case .typeMismatch(let t, let ctx):
        return "field \"\(path(ctx.codingPath))\" should be \(t): \(ctx.debugDescription)"
    case .valueNotFound(let t, let ctx): return "field \"\(path(ctx.codingPath))\" is null, expected \(t)"
    case .dataCorrupted(let ctx):
        let p = path(ctx.codingPath)
        return (p.isEmpty ? "" : "field \"\(p)\": ") + ctx.debugDescription
            + ((ctx.underlyingError as NSError?).map { " (\($0.localizedDescription))" } ?? "")
    @unknown default: return "\(e)"
    }
}
