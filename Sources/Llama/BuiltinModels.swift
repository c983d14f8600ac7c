import Engine
import Foundation

/// Models that need no download: random weights (HF's normal(0, 0.02) init, norms at 1) in a
/// known shape. `tiny` runs in seconds; `smollm2-135m`, `qwen3-0.6b`, `gemma-3-1b`, `llama-3.2-1b`, `phi-4-mini` and
/// `llama-3-8b` have those models' exact shapes, for benchmarks and plans (the big ones with `--quantization nf4`,
/// which draws each projection and quantizes it at once).
public enum BuiltinModels {
    public static let names = ["tiny", "smollm2-135m", "qwen3-0.6b", "gemma-3-1b", "llama-3.2-1b", "phi-4-mini",
                               "llama-3-8b"]

    public static func config(_ name: String) throws -> LlamaConfig {
        switch name {
        case "tiny":
            return LlamaConfig(vocabSize: 256, hiddenSize: 64, intermediateSize: 128, numHiddenLayers: 2,
                               numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 256, ropeTheta: 10000,
                               tieWordEmbeddings: true)
        case "smollm2-135m":
            return LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                               numAttentionHeads: 9, numKeyValueHeads: 3, maxPositionEmbeddings: 8192, rmsNormEps: 1e-5,
                               ropeTheta: 100000, tieWordEmbeddings: true)
        case "qwen3-0.6b":   // Qwen/Qwen3-0.6B: head_dim 128 apart from hidden/heads, per-head q/k norms
            var c = LlamaConfig(vocabSize: 151936, hiddenSize: 1024, intermediateSize: 3072, numHiddenLayers: 28,
                                numAttentionHeads: 16, numKeyValueHeads: 8, headDim: 128, maxPositionEmbeddings: 40960,
                                rmsNormEps: 1e-6, ropeTheta: 1_000_000, tieWordEmbeddings: true)
            c.architectures = ["Qwen3ForCausalLM"]; c.modelType = "qwen3"
            return c
        case "gemma-3-1b":   // google/gemma-3-1b-pt: 5 local layers (512-token window, base 10⁴) per global one
            var c = LlamaConfig(vocabSize: 262144, hiddenSize: 1152, intermediateSize: 6912, numHiddenLayers: 26,
                                numAttentionHeads: 4, numKeyValueHeads: 1, headDim: 256, maxPositionEmbeddings: 32768,
                                rmsNormEps: 1e-6, ropeTheta: 1_000_000, tieWordEmbeddings: true)
            c.architectures = ["Gemma3ForCausalLM"]; c.modelType = "gemma3_text"; c.hiddenAct = "gelu_pytorch_tanh"
            c.layerTypes = LlamaConfig.layerTypes(layers: 26, globalEvery: 6)
            c.slidingWindow = 512; c.localRopeTheta = 10000; c.queryPreAttnScalar = 256
            return c
        case "llama-3.2-1b":
            var llama3 = RopeScaling(kind: .llama3, factor: 32, originalMaxPositionEmbeddings: 8192)
            llama3.lowFreqFactor = 1
            llama3.highFreqFactor = 4
            return LlamaConfig(vocabSize: 128256, hiddenSize: 2048, intermediateSize: 8192, numHiddenLayers: 16,
                               numAttentionHeads: 32, numKeyValueHeads: 8, maxPositionEmbeddings: 131072,
                               rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: llama3, tieWordEmbeddings: true)
        case "phi-4-mini":   // microsoft/Phi-4-mini-instruct: fused qkv/gate_up, rotary on 96 of 128 values per head
            // (its longrope factors change neither memory nor speed, so the shape runs without scaling; a recipe's
            // model.rope_scaling sets one)
            var c = LlamaConfig(vocabSize: 200064, hiddenSize: 3072, intermediateSize: 8192, numHiddenLayers: 32,
                                numAttentionHeads: 24, numKeyValueHeads: 8, maxPositionEmbeddings: 131072,
                                rmsNormEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: true)
            c.architectures = ["Phi3ForCausalLM"]; c.modelType = "phi3"; c.partialRotaryFactor = 0.75
            return c
        case "llama-3-8b":
            return LlamaConfig(vocabSize: 128256, hiddenSize: 4096, intermediateSize: 14336, numHiddenLayers: 32,
                               numAttentionHeads: 32, numKeyValueHeads: 8, maxPositionEmbeddings: 8192,
                               rmsNormEps: 1e-5, ropeTheta: 500000, tieWordEmbeddings: false)
        default:
            throw LongTuneError("unknown built-in model \"\(name)\"; built-ins: \(names.joined(separator: ", "))")
        }
    }

    public static func make(_ name: String, seed: UInt64 = 0, quantization: Quantization? = nil,
                            compute: ComputeDType = .fp32) throws -> LlamaForCausalLM {
        try make(config: try config(name), seed: seed, quantization: quantization, compute: compute)
    }

    /// A model of `config` with the random weights; with `quantization` (or else bf16 `compute`) each projection is
    /// drawn in fp32 and quantized (rounded to bf16) at once, so no fp32 copy of the decoder ever exists (the same
    /// values as converting the fp32 model afterwards). The embedding is then drawn as a bf16 checkpoint stores it,
    /// and with bf16 compute so is an untied LM head.
    public static func make(config: LlamaConfig, seed: UInt64 = 0, quantization: Quantization? = nil,
                            compute: ComputeDType = .fp32) throws -> LlamaForCausalLM {
        let model = LlamaForCausalLM(config: config)
        let quantized = Dictionary(uniqueKeysWithValues: quantization == nil && compute == .fp32 ? []
                                   : model.quantizableLinears.map { ($0.path + ".weight", $0) })
        var rng = SplitMix64(seed: seed)
        for module in model.modules() {
            for (n, shape) in module.parameterShapes where !n.hasSuffix("norm.weight") {
                func drawn() -> Tensor {   // in fp32, for storage in fewer bits
                    let w = Tensor(uninitialized: shape)
                    fillNormal(w, rng: &rng)
                    return w
                }
                if let lin = quantized[n] {
                    let w = drawn()
                    lin.quantized = try quantization.map { try $0.quantize(w, name: "builtin weight \(n)") }
                        ?? HalfMatrix(w, dtype: .bf16)
                } else if quantization != nil || compute == .bf16, module === model.model.embed_tokens {
                    // As a bf16 checkpoint stores it.
                    model.model.embed_tokens.frozen16 = HalfMatrix(drawn(), dtype: .bf16)
                } else if compute == .bf16, module === model.lm_head, !config.tieWordEmbeddings {
                    model.lm_head.quantized = HalfMatrix(drawn(), dtype: .bf16)
                } else if let p = module.parameters.first(where: { $0.0 == n })?.1 {
                    fillNormal(p.value, rng: &rng)
                }
            }
        }
        // The fp32 tensors drawn for quantized and 16-bit storage went to the buffer cache, where nothing of their
        // shapes would reuse them: give their memory back.
        BufferCache.drain()
        return model
    }

    /// Box–Muller normals with std 0.02.
    static func fillNormal(_ t: Tensor, rng: inout SplitMix64) {
        for i in stride(from: 0, to: t.count, by: 2) {
            let u1 = max(Double(rng.nextFloat()), 1e-12), u2 = Double(rng.nextFloat())
            let r = (-2 * Foundation.log(u1)).squareRoot() * 0.02
            t.data[i] = Float(r * Foundation.cos(2 * .pi * u2))
            if i + 1 < t.count { t.data[i + 1] = Float(r * Foundation.sin(2 * .pi * u2)) }
        }
    }
}
