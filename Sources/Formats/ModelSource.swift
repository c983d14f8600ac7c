import Engine
import Foundation
import Llama

/// Where a model comes from on the command line: a Hugging Face directory, or `builtin:NAME`.
public enum ModelSource {
    public static func load(_ spec: String, ropeOverride: RopeScaling? = nil,
                            seed: UInt64 = 0) throws -> LlamaForCausalLM {
        guard spec.hasPrefix("builtin:") else {
            return try LlamaForCausalLM(directory: try ModelDirectory(URL(fileURLWithPath: spec)),
                                        ropeOverride: ropeOverride)
        }
        let builtin = try BuiltinModels.make(String(spec.dropFirst("builtin:".count)), seed: seed)
        guard ropeOverride != nil else { return builtin }
        let config = builtin.config.withRopeScaling(ropeOverride)
        try config.validate(source: spec)
        let scaled = LlamaForCausalLM(config: config)
        for ((_, a), (_, b)) in zip(scaled.namedParameters(), builtin.namedParameters()) { a.value = b.value }
        return scaled
    }

    /// The config `load` would give, without loading weights.
    public static func config(_ spec: String, ropeOverride: RopeScaling? = nil) throws -> LlamaConfig {
        let base = spec.hasPrefix("builtin:") ? try BuiltinModels.config(String(spec.dropFirst("builtin:".count)))
            : try ModelDirectory(URL(fileURLWithPath: spec)).config
        return base.withRopeScaling(ropeOverride)
    }
}
