import ArgumentParser
import Engine
import Foundation

@main
struct LongTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longtune",
        abstract: "Fine-tune Llama-family models to longer context windows on the CPU.",
        discussion: """
            Every command takes --threads N (or LONGTUNE_THREADS=N): the threads of the engine, OpenBLAS and oneDNN. \
            Without it the count follows the CPUs this process may use (taskset, cgroup CPU quota, MPI ranks on the \
            machine); `longtune bench machine` shows what was chosen and why.
            """,
        subcommands: [Train.self, PlanCommand.self, RecipeCommand.self, Pack.self, MergeCommand.self,
                      QuantizeCommand.self, ImportGGUF.self, ExportGGUF.self, Eval.self, Generate.self,
                      ReportCommand.self, Bench.self])

    static func main() {
        setvbuf(stdout, nil, _IOLBF, 0)   // progress and results reach a redirected log line by line
        let arguments = takeThreadsOption(Array(CommandLine.arguments.dropFirst()))
        do { try CPU.checkEnvironment() } catch { exit(withError: error) }
        BLASKernel.configureEnvironment()   // may re-execute once with OpenBLAS's kernel family and thread counts set
        main(arguments)
    }

    /// `--threads N` (any command, anywhere before `--`) is LONGTUNE_THREADS=N (docs/CONVENTIONS.md §18): removed from
    /// the arguments and put in the environment, where the engine, OpenBLAS and oneDNN read it.
    static func takeThreadsOption(_ arguments: [String]) -> [String] {
        var rest: [String] = [], i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--" { rest += arguments[i...]; break }
            if a == "--threads" || a.hasPrefix("--threads=") {
                let value = a == "--threads"
                    ? (i + 1 < arguments.count ? arguments[i + 1] : "")
                    : String(a.dropFirst(10))
                setenv(CPU.threadsVariable, value, 1)
                i += a == "--threads" ? 2 : 1
                continue
            }
            rest.append(a)
            i += 1
        }
        return rest
    }
}
