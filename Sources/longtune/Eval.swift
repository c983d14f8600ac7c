import ArgumentParser

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how a model behaves by context length.",
        subcommands: [EvalPerplexity.self, EvalPasskey.self, EvalStreaming.self, EvalRuler.self])
}
