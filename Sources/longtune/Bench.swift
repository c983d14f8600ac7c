import ArgumentParser
import Formats
import Llama

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory (GFLOP/s against the same process's sgemm, peak memory).",
        subcommands: [BenchKernels.self, BenchTrain.self, BenchDecode.self])
}

/// The model a benchmark runs.
struct BenchModel: ParsableArguments {
    @Option(help: "Model directory or builtin:NAME (builtin:smollm2-135m has SmolLM2-135M's shape).")
    var model = "builtin:smollm2-135m"
    @OptionGroup var storage: StorageOptions

    func load() throws -> LlamaForCausalLM { try ModelSource.load(model, quantization: storage.frozenStorage) }
}

/// How the frozen base is stored, for commands that load a model without a recipe (the recipe's
/// `model.quantization` and `model.double_quantization` mean the same).
struct StorageOptions: ParsableArguments {
    @Option(name: .customLong("quantization"),
            help: "Frozen base storage: none (fp32) or nf4 (QLoRA's 4-bit NormalFloat, bitsandbytes-exact).")
    var kind: QuantizationKind?
    @Flag(help: "nf4: keep the block scales in fp32 instead of double-quantizing them to 8 bits.")
    var noDoubleQuantization = false

    /// nil: fp32.
    var frozenStorage: Quantization? { kind.flatMap { Quantization($0, doubleQuant: !noDoubleQuantization) } }
}

extension QuantizationKind: ExpressibleByArgument {}
