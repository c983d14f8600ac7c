import ArgumentParser

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory (GFLOP/s against the same process's sgemm, peak memory).",
        subcommands: [BenchKernels.self, BenchTrain.self, BenchDecode.self])
}

/// The model a benchmark runs.
struct BenchModel: ParsableArguments {
    @Option(help: "Model directory or builtin:NAME (builtin:smollm2-135m has SmolLM2-135M's shape).")
    var model = "builtin:smollm2-135m"
}
