import ArgumentParser
import Datasets
import Evaluation
import Formats
import Foundation

/// `longtune eval ruler`: RULER's generated long-context tasks by context length (docs/RULER.md).
struct EvalRuler: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ruler",
        abstract: "RULER's synthetic tasks (needles, variable tracking, word extraction) by context length.")

    @OptionGroup var source: EvalModel
    @Option(help: "Comma-separated context lengths (prompt + generated tokens), e.g. 4096,8192,16384.")
    var context: String
    @Option(help: "Comma-separated tasks (default: all eleven): \(Ruler.taskNames).") var tasks: String?
    @Option(help: "Samples per task and length: fewer is faster, more is steadier.") var samples = 10
    @Option(help: "Seed of the generators (RULER's default: 42).") var seed: UInt64 = 42
    @Option(help: "Score (percent) a length's average must reach to count as effective (Llama-2-7B's 85.6 at 4K).")
    var threshold = 85.6
    @Flag(help: "Plain prompts even where the model has a chat template.") var noChatTemplate = false
    @Option(help: "Also write the results as JSON to this file (for longtune report).") var json: String?

    func run() throws {
        let contexts = try EvalModel.contexts(context)
        try EvalModel.checkJSON(json)
        let chosen = try Ruler.tasks(tasks)
        let lm = try source.load(checkingMemoryFor: contexts)
        let tokenizer = try Tokenizer(path: source.model)
        let directory = URL(fileURLWithPath: source.model)
        let ruler = try Ruler(tasks: chosen, contexts: contexts, samples: samples, seed: seed, directory: directory,
                              tokenizer: tokenizer, chat: !noChatTemplate)
        let t0 = Date()
        let results = try ruler.evaluate(model: lm, tokenizer: tokenizer) { Progress.line($0) }
        Progress.done()
        let report = RulerReport(model: source.model, checkpoint: source.checkpoint, chatTemplate: ruler.chat,
                                 seed: seed, threshold: threshold, results: results,
                                 seconds: Date().timeIntervalSince(t0))
        print("model: \(source.model)\(source.checkpoint.map { " + \($0)" } ?? "")   "
              + "rope scaling: \(EvalModel.scalingText(lm))   prompts: \(ruler.chat ? "chat template" : "plain")")
        print(report.table)
        if let json { try AtomicFile.writeJSON(report, to: URL(fileURLWithPath: json)) }
    }
}
