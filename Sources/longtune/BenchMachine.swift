import ArgumentParser
import Engine

/// `longtune bench machine`: what LongTune uses here, without measuring anything.
struct BenchMachine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machine",
        abstract: "The CPU, instruction set, kernel tiles, threads (and what limits them), BLAS and bf16 GEMM in use.")

    @Flag(help: "Print JSON.") var json = false

    func run() {
        let report = MachineReport.current()
        print(json ? report.json : report.text)
    }
}
