import ArgumentParser

@main
struct LongTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "longtune",
        abstract: "Fine-tune Llama-family models to longer context windows on the CPU.",
        subcommands: [Train.self, Pack.self, MergeCommand.self, ImportGGUF.self, Eval.self, Bench.self])
}
