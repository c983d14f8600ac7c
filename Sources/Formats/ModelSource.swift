import Engine
import Foundation
import Llama

/// Where a model comes from on the command line: a Hugging Face directory, a llama.cpp `.gguf` file, or
/// `builtin:NAME`.
public enum ModelSource {
    /// The model, with `ropeOverride` in place of its RoPE scaling; `overrideSource` names where the
    /// override came from (a recipe key, a flag), so its errors blame that and not config.json. With
    /// `quantization` the decoder's projections are stored quantized (QLoRA); else with bf16 `compute` they are
    /// stored in bf16 as they are read, so an fp32 copy of the decoder never exists (docs/CONVENTIONS.md §15;
    /// `setComputeDType` does the rest once the trained tensors are known).
    public static func load(_ spec: String, ropeOverride: RopeScaling? = nil, overrideSource: String = "--rope-scaling",
                            seed: UInt64 = 0, quantization: Quantization? = nil,
                            compute: ComputeDType = .fp32) throws -> LlamaForCausalLM {
        if isGGUF(spec) {
            let file = try GGUFFile(URL(fileURLWithPath: spec))
            try ropeOverride?.validate(rotaryDim: try GGUFImport.config(from: file).rotaryDim, where: overrideSource)
            return try LlamaForCausalLM(gguf: file, ropeOverride: ropeOverride, quantization: quantization)
        }
        guard let name = builtinName(spec) else {
            let directory = try ModelDirectory(URL(fileURLWithPath: spec))
            try ropeOverride?.validate(rotaryDim: directory.config.rotaryDim, where: overrideSource)
            return try LlamaForCausalLM(directory: directory, ropeOverride: ropeOverride, quantization: quantization,
                                        compute: compute)
        }
        let config = try BuiltinModels.config(name)
        try ropeOverride?.validate(rotaryDim: config.rotaryDim, where: overrideSource)
        return try BuiltinModels.make(config: config.withRopeScaling(ropeOverride), seed: seed,
                                      quantization: quantization, compute: compute)
    }

    /// The model's config alone, without loading weights (plans, memory checks).
    public static func config(_ spec: String) throws -> LlamaConfig {
        if isGGUF(spec) { return try GGUFImport.config(from: try GGUFFile(URL(fileURLWithPath: spec))) }
        guard let name = builtinName(spec) else { return try ModelDirectory(URL(fileURLWithPath: spec)).config }
        return try BuiltinModels.config(name)
    }

    /// Whether a quantized base from `spec` keeps its embedding (tied to the LM head or not) in 16 bits
    /// (docs/CONVENTIONS.md §14): built-in models draw it as a bf16 checkpoint stores it, directories when they
    /// store it in fp16/bf16.
    public static func embeddingIn16Bit(_ spec: String, config: LlamaConfig,
                                        quantization: Quantization?) throws -> Bool {
        guard quantization != nil, !isGGUF(spec) else { return false }
        guard builtinName(spec) == nil else { return true }
        return (try ModelDirectory(URL(fileURLWithPath: spec)).dtype(of: "model.embed_tokens.weight") ?? .fp32) != .fp32
    }

    /// A llama.cpp file (trained on directly, its block-quantized projections kept as stored).
    public static func isGGUF(_ spec: String) -> Bool { spec.lowercased().hasSuffix(".gguf") }

    /// NAME of `builtin:NAME`; nil for a directory.
    static func builtinName(_ spec: String) -> String? {
        spec.hasPrefix("builtin:") ? String(spec.dropFirst("builtin:".count)) : nil
    }
}
