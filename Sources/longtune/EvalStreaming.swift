import ArgumentParser
import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama

/// `longtune eval streaming`: perplexity over a long stream with a fixed-size cache — window only,
/// attention sinks + window, and fresh windows of the same size — by segment of the stream.
struct EvalStreaming: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streaming",
        abstract: "Perplexity over a stream longer than the cache: window only vs attention sinks + window "
            + "vs fresh windows.",
        discussion: """
            Every token of the stream is predicted once. "window" keeps the S + W most recent tokens in the cache; \
            "sinks + window" the first S tokens and the W most recent (StreamingLLM); "fresh windows" cuts the stream \
            into windows of S + W tokens, each run from scratch (the model never past the cache size), and, when \
            the model's own window (max_position_embeddings, or the original one under RoPE scaling) is longer, \
            into windows of that length too.
            """)

    @OptionGroup var source: EvalModel
    @Option(help: "HDF5 token dataset (read as one stream).") var data: String
    @Option(help: "Tokens of the stream to score.") var tokens = 65536
    @Option(help: "Start at this token of the dataset.") var offset = 0
    @Option(help: "W: recent tokens the cache keeps besides the sinks.") var window: Int
    @Option(help: "S: attention sinks (first tokens kept).") var sinks = 4
    @Option(help: "Report the loss over segments of this many tokens (default: tokens / 16).") var segment: Int?
    @Option(help: "Tokens per forward pass while decoding the stream.") var chunk = 256
    @Option(help: "Also write the results as JSON to this file.") var json: String?

    func run() throws {
        try EvalModel.checkJSON(json)
        guard tokens >= 2 else { throw LongTuneError("--tokens must be at least 2, got \(tokens)") }
        let lm = try source.load()
        let dataset = try TokenDataset(URL(fileURLWithPath: data), vocabSize: lm.config.vocabSize)
        guard offset >= 0, offset <= dataset.totalTokens, tokens <= dataset.totalTokens - offset else {
            throw LongTuneError("\(data): \(tokens) tokens from token \(offset) run past the dataset's "
                                + "\(dataset.totalTokens) tokens; lower --tokens or --offset")
        }
        let stream = try dataset.tokens(offset: offset, count: tokens)
        let results = try StreamingPerplexity.compare(model: lm, stream: stream, sinks: sinks, window: window,
                                                      chunk: chunk, segment: segment) { Progress.line($0) }
        Progress.done()
        print(table(results))
        if let json {
            let report = StreamingReport(model: source.model, checkpoint: source.checkpoint, data: data, offset: offset,
                                         results: results)
            try AtomicFile.writeJSON(report, to: URL(fileURLWithPath: json))
        }
    }

    func table(_ results: [StreamingResult]) -> String {
        let widths = results.map { max(10, $0.setting.count + 2) }
        func row(_ label: String, _ cells: [String]) -> String {
            label + zip(cells, widths).map { String(repeating: " ", count: max(0, $1 - $0.count)) + $0 }.joined()
        }
        var lines = ["perplexity by segment of the stream (model \(source.model); cache \(sinks + window) tokens)",
                     row("        targets", results.map(\.setting))]
        for (i, seg) in results[0].segments.enumerated() {
            lines.append(row(String(format: "%7d-%-7d", seg.start + 1, seg.end),
                             results.map { String(format: "%.3f", $0.segments[i].perplexity) }))
        }
        lines.append(row("            all", results.map { String(format: "%.3f", $0.perplexity) }))
        lines.append(row("       tokens/s", results.map { String(format: "%.0f", $0.tokensPerSecond) }))
        return lines.joined(separator: "\n")
    }
}
