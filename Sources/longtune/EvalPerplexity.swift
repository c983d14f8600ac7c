import ArgumentParser
import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama
import Training

/// `longtune eval perplexity`: perplexity at several context lengths, with the model's own RoPE
/// scaling or one given on the command line.
struct EvalPerplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of windows of each context length (tokens 2…C given their prefix).")

    @OptionGroup var source: EvalModel
    @Option(help: "HDF5 token dataset (input_ids [N, L] or a 1-D stream).") var data: String
    @Option(help: "Comma-separated context lengths, e.g. 2048,4096,8192.") var context: String
    @Option(help: "Start a window every N tokens (default: the context length).") var stride: Int?
    @Option(help: "At most this many windows per context length.") var maxWindows: Int?
    @Option(help: "Also write the results as JSON to this file.") var json: String?

    func run() throws {
        let contexts = try EvalModel.contexts(context)
        try EvalModel.checkJSON(json)
        if let stride, stride < 1 { throw LongTuneError("--stride: a step of at least 1 token, got \(stride)") }
        if let maxWindows, maxWindows < 1 {
            throw LongTuneError("--max-windows: at least 1 window per context length, got \(maxWindows)")
        }
        let lm = try source.load(checkingMemoryFor: contexts)
        let dataset = try TokenDataset(URL(fileURLWithPath: data), vocabSize: lm.config.vocabSize)
        if dataset.hasLabels, contexts != [dataset.shape[1]] {
            throw LongTuneError("\(data): an SFT file (with labels) is scored row by row on its replies; "
                                + "give --context \(dataset.shape[1]), its row length")
        }
        let results = dataset.hasLabels
            ? [try Perplexity.labelled(model: lm, data: dataset, maxRows: maxWindows) { Progress.line($0) }]
            : try Perplexity.evaluate(model: lm, data: dataset, contexts: contexts, stride: stride,
                                      maxWindows: maxWindows) { Progress.line($0) }
        Progress.done()
        print("model: \(source.model)   rope scaling: \(RopeScaling.text(lm.config.ropeScaling))"
              + (dataset.hasLabels ? "   scored: labelled tokens only (SFT replies), row by row" : ""))
        print("context  windows    tokens      nll  perplexity")
        for r in results {
            print(String(format: "%7d  %7d  %8d  %7.4f  %10.3f", r.context, r.windows, r.tokens, r.nll, r.perplexity))
        }
        if let json {
            try AtomicFile.writeJSON(PerplexityReport(model: source.model, config: lm.config, results: results),
                                     to: URL(fileURLWithPath: json))
        }
    }
}

/// The model an evaluation runs: a directory, optionally with a checkpoint's adapters or another RoPE scaling.
struct EvalModel: ParsableArguments {
    @Option(help: "Hugging Face model directory (config.json + *.safetensors).") var model: String
    @Option(help: "A LongTune checkpoint whose adapters and trained tensors (and RoPE scaling) to apply to the model.")
    var checkpoint: String?
    @Option(help: #"""
        RoPE scaling overriding the model's, as JSON, e.g. \#
        '{"rope_type":"yarn","factor":4,"original_max_position_embeddings":8192}' or '{"rope_type":"default"}'.
        """#)
    var ropeScaling: String?
    @OptionGroup var storage: StorageOptions

    /// What the options ask for.
    var request: EvaluationModel {
        EvaluationModel(base: model, checkpoint: checkpoint, ropeScalingJSON: ropeScaling, quantization: storage.kind,
                        doubleQuantization: !storage.noDoubleQuantization, compute: storage.computeDType)
    }

    func load() throws -> LlamaForCausalLM { try request.load() }

    /// The model, after checking that a forward pass of each context length fits in memory (before loading).
    func load(checkingMemoryFor contexts: [Int]) throws -> LlamaForCausalLM {
        try request.load(checkingMemoryFor: contexts)
    }

    /// "2048,8192" → [2048, 8192]
    /// `--json FILE`, checked before the evaluation runs (docs/CONVENTIONS.md §19).
    static func checkJSON(_ json: String?) throws {
        if let json { try OutputPath.check(json, option: "--json", kind: .file) }
    }

    static func contexts(_ text: String) throws -> [Int] {
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw LongTuneError("--context: no lengths given; write them comma-separated, e.g. 2048,8192")
        }
        return try text.split(separator: ",", omittingEmptySubsequences: false).map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), (1...(1 << 32)).contains(v) else {
                let item = s.isEmpty ? "an empty item" : "\"\(s)\""
                throw LongTuneError("--context: \(item) in \"\(text)\" is not a whole "
                                    + "number of tokens in 1...2^32; write lengths comma-separated, e.g. 2048,8192")
            }
            return v
        }
    }
}

/// One live status line on stderr (rewritten in place on a terminal).
enum Progress {
    static let tty = isatty(2) != 0
    static func line(_ s: String) {
        FileHandle.standardError.write(Data((tty ? "\r\u{1B}[K" + s : s + "\n").utf8))
    }
    static func done() { if tty { FileHandle.standardError.write(Data("\n".utf8)) } }
}
