import ArgumentParser
import Engine
import Foundation

/// `longtune bench kernels`: sgemm and bf16 GEMM at Llama shapes and fused attention forward+backward.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GFLOP/s of sgemm and bf16 GEMM at Llama shapes and of fused attention at 2048 and 8192 tokens.")

    @Option(help: "Attention lengths to measure.") var lengths: [Int] = [2048, 8192]
    @Option(help: "Query heads, KV heads and head dimension of the attention benchmark.")
    var heads = 9
    @Option var kvHeads = 3
    @Option var headDim = 64
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() throws {
        let rows = try KernelBenchmark.run(lengths: lengths, shape: .init(heads: heads, kvHeads: kvHeads,
                                                                          headDim: headDim))
        if json {
            let report = KernelBenchmark.Report(machine: .current(), results: rows)
            return print(String(decoding: try MachineReport.encoder.encode(report), as: UTF8.self))
        }
        print(MachineReport.current().text)
        for r in rows { print(r.line) }
        print(KernelBenchmark.attentionNote)
    }
}
