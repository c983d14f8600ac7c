import ArgumentParser
import Engine
import Foundation

@main
struct LongTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longtune",
        abstract: "Fine-tune Llama-family models to longer context windows on the CPU.",
        subcommands: [Train.self, PlanCommand.self, RecipeCommand.self, Pack.self, MergeCommand.self, QuantizeCommand.self, ImportGGUF.self, Eval.self, Generate.self,
                      ReportCommand.self, Bench.self])

    static func main() {
        setvbuf(stdout, nil, _IOLBF, 0)   // progress and results reach a redirected log line by line
        BLASKernel.configureEnvironment()   // may re-execute once with OpenBLAS's kernel family and thread timeout set
        main(nil)
    }
}
