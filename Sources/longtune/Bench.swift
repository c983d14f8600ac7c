import ArgumentParser

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed and memory (GFLOP/s against the same process's sgemm, peak memory).",
        subcommands: [BenchKernels.self, BenchTrain.self, BenchDecode.self])
}
