import ArgumentParser
import Engine
import Formats
import Llama
import Training

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory (GFLOP/s against the same process's sgemm, peak memory).",
        subcommands: [BenchMachine.self, BenchKernels.self, BenchTrain.self, BenchDecode.self])
}

/// The model a benchmark runs.
struct BenchModel: ParsableArguments {
    @Option(help: ArgumentHelp("Model directory, .gguf file or builtin:NAME ("
                               + "\(BuiltinModels.names.joined(separator: ", ")): "
                               + "random weights in those models' shapes)."))
    var model = "builtin:smollm2-135m"
    @OptionGroup var storage: StorageOptions

    func load() throws -> LlamaForCausalLM {
        try ModelSource.load(model, quantization: storage.frozenStorage, compute: storage.compute)
    }
}

/// How the frozen base is stored, for commands that load a model without a recipe: the recipe's
/// `model.quantization` and `model.double_quantization`, whose meanings the help quotes.
struct StorageOptions: ParsableArguments {
    @Option(name: .customLong("quantization"), help: ArgumentHelp(Recipe.Model.meaning(of: "quantization")))
    var kind: QuantizationKind?
    @Flag(help: ArgumentHelp("Turn off: " + Recipe.Model.meaning(of: "double_quantization")))
    var noDoubleQuantization = false

    @Option(name: .customLong("compute-dtype"), help: ArgumentHelp(Recipe.Model.meaning(of: "compute_dtype")))
    var computeDType: ComputeDType?

    /// The compute dtype asked for (fp32 when not).
    var compute: ComputeDType { computeDType ?? .fp32 }

    /// nil: fp32.
    var frozenStorage: Quantization? { kind.flatMap { Quantization($0, doubleQuant: !noDoubleQuantization) } }
}

extension QuantizationKind: ExpressibleByArgument {}
extension ComputeDType: ExpressibleByArgument {}
