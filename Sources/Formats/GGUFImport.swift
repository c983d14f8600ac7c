import Engine
import Foundation
import Llama

/// Turns a llama.cpp GGUF file of a Llama model into a Hugging Face directory: config.json,
/// model.safetensors (dequantized, HF names, q/k rows un-permuted), tokenizer.json and
/// tokenizer_config.json built from the GGUF tokenizer metadata.
public enum GGUFImport {
    public static func run(_ gguf: GGUFFile, to out: URL, dtype: DType = .fp32, force: Bool = false,
                           log: (String) -> Void = { _ in }) throws {
        try OutputPath.check(out.path, option: "--out", kind: .directory(.model), force: force)
        let config = try config(from: gguf)

        let expected = Dictionary(LlamaForCausalLM(config: config).parameterShapes(), uniquingKeysWith: { a, _ in a })
        var tensors: [(String, Tensor)] = []
        for name in gguf.tensorOrder {
            guard let hf = hfName(name, architecture: architecture(gguf)) else { log("skipping \(name)"); continue }
            guard let shape = expected[hf] else {
                throw LongTuneError("\(gguf.url.path): tensor \(name) does not belong to the model its metadata "
                                    + "describes (\(config.numHiddenLayers) layers)")
            }
            tensors.append((hf, try hfTensor(gguf, name, shape: shape, config: config)))
        }
        let have = Set(tensors.map(\.0))
        let missing = expected.keys.sorted().filter { !have.contains($0) }
        guard missing.isEmpty else {
            throw LongTuneError("\(gguf.url.path): missing tensors for \(missing.prefix(4).joined(separator: ", "))")
        }
        var cfg = config; cfg.torchDtype = dtype.torchName
        try AtomicDirectory.write(out) { dir in
            try SafetensorsFile.write(tensors, dtype: dtype, to: dir.appendingPathComponent("model.safetensors"))
            try AtomicFile.writeJSON(cfg, to: dir.appendingPathComponent("config.json"))
            try GGUFTokenizer.write(gguf, to: dir)
        }
    }

    /// GGUF tensor `name` as the HF tensor of `shape`: dequantized, q/k rows in HF order.
    public static func hfTensor(_ gguf: GGUFFile, _ name: String, shape: [Int], config: LlamaConfig) throws -> Tensor {
        let t = try gguf.tensor(name)
        guard t.shape == shape else {
            throw LongTuneError("\(gguf.url.path): tensor \(name) has shape \(t.shape), the metadata implies \(shape)")
        }
        let shift = normShift(name, architecture: architecture(gguf))
        if shift != 0 { for i in 0..<t.count { t.data[i] -= shift } }
        guard let heads = permutedHeads(name, config, architecture: architecture(gguf)) else { return t }
        return unpermute(t, heads: heads)
    }

    /// The head count whose llama.cpp row order tensor `name` is stored in (q and k weights), or nil. Only `llama`
    /// files permute them (for llama.cpp's interleaved RoPE); `qwen2` and `qwen3` files keep HF's order.
    public static func permutedHeads(_ name: String, _ config: LlamaConfig, architecture: String) -> Int? {
        guard architecture == "llama" else { return nil }
        if name.hasSuffix("attn_q.weight") { return config.numAttentionHeads }
        if name.hasSuffix("attn_k.weight") { return config.numKeyValueHeads }
        return nil
    }

    /// What a `gemma3` file adds to each norm weight (the converter stores Gemma3RMSNorm's 1 + w), else 0.
    public static func normShift(_ name: String, architecture: String) -> Float {
        architecture == "gemma3" && name.hasSuffix("norm.weight") ? 1 : 0
    }

    /// HF row r of a q/k weight is GGUF row rowSource[r] (the inverse of llama.cpp's permutation).
    public static func hfRowSource(rows: Int, heads: Int) -> [Int] {
        let d = rows / heads
        var source = Array(0..<rows)
        for h in 0..<heads { for half in 0..<2 { for i in 0..<(d / 2) {
            source[h * d + half * (d / 2) + i] = h * d + 2 * i + half
        } } }
        return source
    }

    /// HF parameter name → GGUF tensor name, for every tensor of the file the model uses.
    public static func hfNames(_ gguf: GGUFFile) -> [String: String] {
        var map: [String: String] = [:]
        for name in gguf.tensorOrder { if let hf = hfName(name, architecture: architecture(gguf)) { map[hf] = name } }
        return map
    }

    /// llama.cpp architectures that import, with the HF architecture and model_type each becomes.
    static let families = ["llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2"),
                           "qwen3": ("Qwen3ForCausalLM", "qwen3"), "phi3": ("Phi3ForCausalLM", "phi3"),
                           "gemma3": ("Gemma3ForCausalLM", "gemma3_text")]

    /// The file's `general.architecture`.
    public static func architecture(_ g: GGUFFile) -> String { g.metadata["general.architecture"]?.string ?? "?" }

    /// LlamaConfig from the `ARCH.*` metadata (llama, qwen2, qwen3, phi3, gemma3).
    public static func config(from g: GGUFFile) throws -> LlamaConfig {
        let arch = architecture(g)
        guard let (hfArchitecture, modelType) = families[arch] else {
            throw LongTuneError("\(g.url.path): general.architecture is \"\(arch)\"; GGUF files of "
                                + "\(families.keys.sorted().joined(separator: ", ")) models can be imported")
        }
        func value(_ k: String) -> GGUFFile.Value? { g.metadata[arch + "." + k] }
        func int(_ k: String) throws -> Int {
            guard let v = value(k)?.int else { throw LongTuneError("\(g.url.path): metadata \(arch).\(k) is missing") }
            return v
        }
        let vocab = value("vocab_size")?.int ?? g.metadata["tokenizer.ggml.tokens"]?.array?.count ?? 0
        let heads = try int("attention.head_count")
        let hidden = try int("embedding_length")
        var c = LlamaConfig(vocabSize: vocab, hiddenSize: hidden, intermediateSize: try int("feed_forward_length"),
                            numHiddenLayers: try int("block_count"), numAttentionHeads: heads,
                            numKeyValueHeads: value("attention.head_count_kv")?.int ?? heads,
                            headDim: value("attention.key_length")?.int ?? hidden / max(heads, 1),
                            maxPositionEmbeddings: try int("context_length"),
                            rmsNormEps: value("attention.layer_norm_rms_epsilon")?.double ?? 1e-5,
                            ropeTheta: value("rope.freq_base")?.double ?? 10000,
                            tieWordEmbeddings: g.tensors["output.weight"] == nil)
        c.architectures = [hfArchitecture]; c.modelType = modelType
        if arch == "qwen2" { c.attentionBias = true }   // Qwen2: q/k/v biases, none on o_proj
        if arch == "phi3" { try readPhi3(g, into: &c) }
        if arch == "gemma3" { try readGemma3(g, into: &c) }
        c.bosTokenId = try tokenId(g, "tokenizer.ggml.bos_token_id", vocab: vocab)
        c.eosTokenId = try tokenId(g, "tokenizer.ggml.eos_token_id", vocab: vocab)
        if let kind = value("rope.scaling.type")?.string, kind != "none" {
            guard let k = RopeScaling.Kind(rawValue: kind) else {
                throw LongTuneError("\(g.url.path): \(arch).rope.scaling.type \"\(kind)\" is not supported")
            }
            c.ropeScaling = RopeScaling(
                kind: k, factor: value("rope.scaling.factor")?.double,
                originalMaxPositionEmbeddings: value("rope.scaling.original_context_length")?.int)
        }
        try c.validate(source: "\(g.url.path) (metadata)")   // before any caller builds a model of this shape
        return c
    }

    /// Phi-3's rotary share, window and longrope (docs/CONVENTIONS.md §22): rope.dimension_count of each head's
    /// values, attention.sliding_window (0: none), the rope_factors_long/short tensors past original_context_length.
    static func readPhi3(_ g: GGUFFile, into c: inout LlamaConfig) throws {
        func value(_ k: String) -> GGUFFile.Value? { g.metadata["phi3." + k] }
        if let rotary = value("rope.dimension_count")?.int {
            c.partialRotaryFactor = Double(rotary) / Double(c.headDim)
        }
        if let w = value("attention.sliding_window")?.int, w > 0 { c.slidingWindow = w }
        guard g.tensors["rope_factors_long.weight"] != nil else { return }
        guard let original = value("rope.scaling.original_context_length")?.int else {
            throw LongTuneError("\(g.url.path): rope_factors_long without phi3.rope.scaling.original_context_length")
        }
        var s = RopeScaling(kind: .longrope, originalMaxPositionEmbeddings: original)
        s.longFactor = try g.tensor("rope_factors_long.weight").array.map(Double.init)
        s.shortFactor = try g.tensor("rope_factors_short.weight").array.map(Double.init)
        c.ropeScaling = s
    }

    /// Gemma 3 as llama.cpp runs a `gemma3` file (src/models/gemma3.cpp): attention.sliding_window on the layers
    /// attention.sliding_window_pattern marks (an array of flags, or P: all but every P-th; 6 when absent), those
    /// layers' base rope.freq_base_swa (10⁴ when absent), GeGLU, and the score scale llama.cpp derives:
    /// 1/√head_dim (1/√(hidden/heads) for the 62-layer 27B), as query_pre_attn_scalar.
    static func readGemma3(_ g: GGUFFile, into c: inout LlamaConfig) throws {
        func value(_ k: String) -> GGUFFile.Value? { g.metadata["gemma3." + k] }
        c.hiddenAct = GatedActivation.geluTanh.rawValue
        c.queryPreAttnScalar = llamaCppQueryPreAttnScalar(c)
        c.localRopeTheta = value("rope.freq_base_swa")?.double ?? LlamaConfig.defaultLocalRopeTheta
        guard let w = value("attention.sliding_window")?.int, w > 0 else { return }
        c.slidingWindow = w
        let pattern = value("attention.sliding_window_pattern")
        if let flags = pattern?.array {
            guard flags.count == c.numHiddenLayers else {
                throw LongTuneError("\(g.url.path): gemma3.attention.sliding_window_pattern has \(flags.count) "
                                    + "entries for \(c.numHiddenLayers) layers")
            }
            c.layerTypes = flags.map { $0.bool == true ? .sliding : .full }
        } else {
            c.layerTypes = LlamaConfig.layerTypes(layers: c.numHiddenLayers,
                                                  globalEvery: pattern?.int ?? LlamaConfig.defaultGlobalEvery)
        }
    }

    /// The score scale llama.cpp gives a `gemma3` model, as query_pre_attn_scalar: the head size, or hidden/heads for
    /// the 62-layer 27B (src/models/gemma3.cpp).
    public static func llamaCppQueryPreAttnScalar(_ c: LlamaConfig) -> Double {
        Double(c.numHiddenLayers == 62 ? c.hiddenSize / c.numAttentionHeads : c.headDim)
    }

    /// A special token id from the metadata: absent, or a token of the vocabulary (an error naming the key otherwise).
    static func tokenId(_ g: GGUFFile, _ key: String, vocab: Int) throws -> Int? {
        guard let value = g.metadata[key] else { return nil }
        guard let id = value.int, (0..<vocab).contains(id) else {
            throw LongTuneError("\(g.url.path): \(key) is \(value), not a token id of the \(vocab)-token vocabulary")
        }
        return id
    }

    /// llama.cpp's names for the model-level tensors → HF names.
    static let globalNames = ["token_embd.weight": "model.embed_tokens.weight",
                              "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"]
    /// llama.cpp's names within `blk.N.` → HF names within `model.layers.N.`.
    static let blockNames = ["attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                             "ffn_norm": "post_attention_layernorm", "attn_q_norm": "self_attn.q_norm",
                             "attn_k_norm": "self_attn.k_norm"]

    /// Names that differ by architecture, looked up first: Phi-3's fused tensors (attn_qkv, and ffn_up holding gate
    /// then up); Gemma 3's four norms per block (ffn_norm is the one before the MLP).
    static let familyBlockNames = [
        "phi3": ["attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"],
        "gemma3": ["post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
                   "post_ffw_norm": "post_feedforward_layernorm"],
    ]

    static func hfName(_ n: String, architecture: String) -> String? {
        if let hf = globalNames[n] { return hf }
        let parts = n.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk", let layer = Int(parts[1]) else { return nil }
        let own = familyBlockNames[architecture]?[String(parts[2])]
        guard let m = own ?? blockNames[String(parts[2])] else { return nil }
        return "model.layers.\(layer).\(m).\(parts[3])"
    }

    /// The llama.cpp name of an HF parameter in a file of `architecture` (the inverse of `hfName`), nil for one
    /// llama.cpp has no name for.
    public static func ggufName(_ hf: String, architecture: String) -> String? {
        if let g = globalNames.first(where: { $0.value == hf })?.key { return g }
        let parts = hf.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let module = parts[3..<(parts.count - 1)].joined(separator: ".")
        let own = familyBlockNames[architecture]?.first(where: { $0.value == module })?.key
        guard let g = own ?? blockNames.first(where: { $0.value == module })?.key else { return nil }
        return "blk.\(layer).\(g).\(parts.last!)"
    }

    /// Undoes llama.cpp's q/k row order: within each head, GGUF row 2i + half is HF row half·D/2 + i.
    static func unpermute(_ w: Tensor, heads: Int) -> Tensor {
        let rows = w.shape[0], cols = w.shape.count > 1 ? w.shape[1] : 1
        let out = Tensor(uninitialized: w.shape)
        for (dst, src) in hfRowSource(rows: rows, heads: heads).enumerated() {
            (out.data + dst * cols).update(from: w.data + src * cols, count: cols)
        }
        return out
    }
}
