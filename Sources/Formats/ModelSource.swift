import Engine
import Foundation
import Llama

/// Where a model comes from on the command line: a Hugging Face directory, or `builtin:NAME`.
public enum ModelSource {
    public static func load(_ spec: String, ropeOverride: RopeScaling? = nil, seed: UInt64 = 0) throws -> LlamaForCausalLM {
        if spec.hasPrefix("builtin:") {
            let model = try BuiltinModels.make(String(spec.dropFirst("builtin:".count)), seed: seed)
            if let ropeOverride {
                var c = model.config
                c.ropeScaling = ropeOverride.kind == .default ? nil : ropeOverride
                try c.validate(source: spec)
                let scaled = LlamaForCausalLM(config: c)
                for ((_, a), (_, b)) in zip(scaled.namedParameters(), model.namedParameters()) { a.value = b.value }
                return scaled
            }
            return model
        }
        return try LlamaForCausalLM(directory: try ModelDirectory(URL(fileURLWithPath: spec)), ropeOverride: ropeOverride)
    }
}
