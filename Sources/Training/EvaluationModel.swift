import Adapters
import Engine
import Formats
import Foundation
import Llama

/// The model an evaluation or generation runs (`eval`, `generate`): a base (directory, .gguf file or builtin:NAME)
/// with the RoPE scaling, frozen storage and compute dtype asked for, or a checkpoint's trained model on that base,
/// which brings the scaling and storage it trained with.
public struct EvaluationModel {
    public var base: String
    public var checkpoint: String?
    /// `--rope-scaling`: JSON of a RoPE scaling overriding the base's.
    public var ropeScalingJSON: String?
    /// `--quantization` as given (nil: not given, fp32 unless a checkpoint says otherwise).
    public var quantization: QuantizationKind?
    public var doubleQuantization: Bool
    /// `--compute-dtype` as given (nil: the checkpoint's, else fp32).
    public var compute: ComputeDType?

    public init(base: String, checkpoint: String? = nil, ropeScalingJSON: String? = nil,
                quantization: QuantizationKind? = nil, doubleQuantization: Bool = true, compute: ComputeDType? = nil) {
        self.base = base; self.checkpoint = checkpoint; self.ropeScalingJSON = ropeScalingJSON
        self.quantization = quantization; self.doubleQuantization = doubleQuantization; self.compute = compute
    }

    /// The model, checking the combinations a checkpoint decides on its own.
    public func load() throws -> LlamaForCausalLM {
        let override = try ropeOverride()
        if let checkpoint {
            guard override == nil else {
                throw LongTuneError("--rope-scaling: a checkpoint brings the RoPE scaling it was trained with; "
                                    + "drop one of the two")
            }
            guard quantization == nil else {
                throw LongTuneError("--quantization: a checkpoint brings the base storage it was trained on "
                                    + "(its recipe's model.quantization); drop the flag")
            }
            return try Checkpoint.trainedModel(URL(fileURLWithPath: checkpoint), base: base, compute: compute).1.base
        }
        let storage = quantization.flatMap { Quantization($0, doubleQuant: doubleQuantization) }
        let lm = try ModelSource.load(base, ropeOverride: override, quantization: storage, compute: compute ?? .fp32)
        lm.setComputeDType(compute ?? .fp32)
        return lm
    }

    /// The model, after checking that a forward pass of each context length fits in memory (before loading).
    public func load(checkingMemoryFor contexts: [Int]) throws -> LlamaForCausalLM {
        let config = try ModelSource.config(base)
        let recipe = try checkpoint.map { try Checkpoint.read(URL(fileURLWithPath: $0)).state.recipe.model }
        let storage = recipe.map(\.frozenStorage)
            ?? quantization.flatMap { Quantization($0, doubleQuant: doubleQuantization) }
        let dtype = compute ?? recipe?.compute_dtype ?? .fp32
        try Planner.checkForward(config, lengths: contexts, what: "--context",
                                 footprint: try FrozenFootprint.of(base, config: config, quantization: storage,
                                                                   compute: dtype), compute: dtype)
        return try load()
    }

    /// The RoPE scaling `--rope-scaling` gives, nil when not given.
    func ropeOverride() throws -> RopeScaling? {
        guard let ropeScalingJSON else { return nil }
        do {
            return try JSONDecoder().decode(RopeScaling.self, from: Data(ropeScalingJSON.utf8))
        } catch let e as DecodingError {
            throw LongTuneError("--rope-scaling: \(describe(e))")
        } catch { throw LongTuneError("--rope-scaling: not valid JSON (\(error.localizedDescription))") }
    }
}

extension Checkpoint {
    /// A checkpoint's model rebuilt with its trained tensors applied (adapters attached), on the base as
    /// it was trained (quantized when the recipe quantized it), computing in `compute` (nil: the recipe's).
    public static func trainedModel(_ checkpoint: URL, base: String? = nil,
                                    compute: ComputeDType? = nil) throws -> (Checkpoint.Loaded, LoRAModel) {
        let ck = try Checkpoint.read(checkpoint)
        try ck.requireFiniteTensors()
        let r = ck.state.recipe
        let basePath = base ?? r.model.path
        let compute = compute ?? r.model.compute_dtype
        let model = try ModelSource.load(basePath, ropeOverride: r.model.rope_scaling, seed: r.training.seed,
                                         quantization: r.model.frozenStorage, compute: compute)
        try ck.requireBase(model.config, at: basePath)
        let lora = try LoRAModel(model, config: r.adapter, seed: r.training.seed)
        for (n, p) in lora.trainableParameters { p.value = try ck.tensor(n, shape: p.shape) }
        model.setComputeDType(compute)
        return (ck, lora)
    }
}
