import Engine
import Foundation

/// Models that need no download: random weights (HF's normal(0, 0.02) init, norms at 1) in a
/// known shape. `tiny` runs in seconds; `smollm2-135m` has SmolLM2-135M's exact shape, for benchmarks.
public enum BuiltinModels {
    public static let names = ["tiny", "smollm2-135m"]

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
        default:
            throw EngineError("unknown built-in model \"\(name)\"; built-ins: \(names.joined(separator: ", "))")
        }
    }

    public static func make(_ name: String, seed: UInt64 = 0) throws -> LlamaForCausalLM {
        let model = LlamaForCausalLM(config: try config(name))
        var rng = SplitMix64(seed: seed)
        for (n, p) in model.namedParameters() where !n.hasSuffix("norm.weight") {
            // Box–Muller normals with std 0.02.
            for i in stride(from: 0, to: p.value.count, by: 2) {
                let u1 = max(Double(rng.nextFloat()), 1e-12), u2 = Double(rng.nextFloat())
                let r = (-2 * Foundation.log(u1)).squareRoot() * 0.02
                p.value.data[i] = Float(r * Foundation.cos(2 * .pi * u2))
                if i + 1 < p.value.count { p.value.data[i + 1] = Float(r * Foundation.sin(2 * .pi * u2)) }
            }
        }
        return model
    }
}
