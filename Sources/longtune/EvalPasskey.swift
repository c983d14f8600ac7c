import ArgumentParser
import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama

/// `longtune eval passkey`: can the model find a five-digit key hidden in filler text of each length?
struct EvalPasskey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passkey",
        abstract: "Passkey retrieval accuracy by context length (a key hidden at evenly spread depths of filler text).")

    @OptionGroup var source: EvalModel
    @Option(help: "Comma-separated context lengths (prompt + answer tokens), e.g. 2048,8192,16384.") var context: String
    @Option(help: "Keys per context length, hidden at depths spread evenly from the start to the end.") var trials = 5
    @Option(help: "Seed of the keys.") var seed: UInt64 = 1
    @Option(help: "Also write the results as JSON to this file.") var json: String?

    func run() throws {
        let contexts = try EvalModel.contexts(context)
        try EvalModel.checkJSON(json)
        let lm = try source.load(checkingMemoryFor: contexts)
        let tokenizer = try Tokenizer(path: source.model)
        let results = try Passkey.evaluate(model: lm, tokenizer: tokenizer, contexts: contexts, trials: trials,
                                           seed: seed) {
            Progress.line($0)
        }
        Progress.done()
        print("model: \(source.model)\(source.checkpoint.map { " + \($0)" } ?? "")   "
              + "rope scaling: \(RopeScaling.text(lm.config.ropeScaling))")
        print("context  retrieved  accuracy  depths missed")
        for r in results {
            let missed = r.trials.filter { !$0.retrieved }.map { String(format: "%.2f", $0.depth) }
                .joined(separator: " ")
            print(String(format: "%7d  %5d/%-3d  %7.0f%%  %@", r.context, r.trials.filter(\.retrieved).count,
                         r.trials.count, 100 * r.accuracy, missed.isEmpty ? "-" : missed))
        }
        if let json {
            let report = PasskeyReport(model: source.model, checkpoint: source.checkpoint, results: results)
            try AtomicFile.writeJSON(report, to: URL(fileURLWithPath: json))
        }
    }
}
