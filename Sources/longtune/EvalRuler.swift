import ArgumentParser
import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama

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
    @Option(help: "Also write the results as JSON to this file (for longtune report), rewritten after each task.")
    var json: String?
    @Flag(help: "Continue the run that wrote --json FILE: the tasks and lengths it holds are kept, the rest run.")
    var resume = false

    func run() throws {
        let contexts = try EvalModel.contexts(context)
        try EvalModel.checkJSON(json)
        guard !resume || json != nil else { throw LongTuneError("--resume: name the run's file with --json FILE") }
        let chosen = try Ruler.tasks(tasks)
        let lm = try source.load(checkingMemoryFor: contexts)
        let tokenizer = try Tokenizer(path: source.model)
        let directory = URL(fileURLWithPath: source.model)
        let ruler = try Ruler(tasks: chosen, contexts: contexts, samples: samples, seed: seed, directory: directory,
                              tokenizer: tokenizer, chat: !noChatTemplate)
        func report(_ results: [RulerTaskResult], seconds: Double) -> RulerReport {
            RulerReport(model: source.model, checkpoint: source.checkpoint, ropeScaling: lm.config.ropeScaling,
                        chatTemplate: ruler.chat, seed: seed, threshold: threshold, results: results, seconds: seconds)
        }
        let file = json.map { URL(fileURLWithPath: $0) }
        let earlier: (results: [RulerTaskResult], seconds: Double) = try file.flatMap { resume ? $0 : nil }
            .map { try RulerReport.resumable(from: $0, like: report([], seconds: 0), samples: samples) } ?? ([], 0)
        if let file, !resume, FileManager.default.fileExists(atPath: file.path) {
            Progress.line("--json \(file.path) exists: it will be replaced (--resume continues it)")
        }
        let t0 = Date()
        func seconds() -> Double { earlier.seconds + Date().timeIntervalSince(t0) }
        let results = try ruler.evaluate(model: lm, tokenizer: tokenizer, earlier: earlier.results, finished: {
            if let file { try AtomicFile.writeJSON(report($0, seconds: seconds()), to: file) }
        }) { Progress.line($0) }
        Progress.done()
        print("model: \(source.model)\(source.checkpoint.map { " + \($0)" } ?? "")   "
              + "rope scaling: \(RopeScaling.text(lm.config.ropeScaling))   "
              + "prompts: \(ruler.chat ? "chat template" : "plain")"
              + (earlier.results.isEmpty ? "" : "   resumed: \(earlier.results.count) task results kept"))
        print(report(results, seconds: seconds()).table)
    }
}
