import ArgumentParser
import Datasets
import Engine
import Formats
import Foundation

/// `longtune pack`: tokenize documents and pack them into an HDF5 dataset of fixed-length rows.
struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tokenize .txt files (one document each) and .jsonl files (a \"text\" field per line) "
            + "into packed HDF5 rows.")

    @Option(help: "Model directory with tokenizer.json, or the tokenizer.json file.") var tokenizer: String
    @Option(help: "Tokens per row.") var seqLen: Int
    @Option(help: "Output .h5 file.") var out: String
    @Option(help: "EOS token id joining documents (default: the tokenizer's EOS).") var eos: Int?
    @Option(help: ArgumentHelp("Instruction/chat data: the prompt format, chat (the model's own), alpaca or airoboros "
                               + "(default: chat where the tokenizer has a chat template, else alpaca)."))
    var format: String?
    @Option(help: """
        Instruction/chat data: which tokens are trained: \
        assistant (every reply), last (the last reply), all.
        """)
    var trainOn: TrainOn = .assistant
    @Flag(help: "Instruction/chat data: cut a sample longer than a row on its prompt side instead of stopping.")
    var truncate = false
    @Argument(help: "Input .txt / .jsonl files.") var inputs: [String]

    func run() throws {
        guard seqLen >= 2 else { throw LongTuneError("--seq-len must be at least 2, got \(seqLen)") }
        guard !inputs.isEmpty else { throw LongTuneError("no input files; give .txt or .jsonl files to pack") }
        try OutputPath.check(out, option: "--out", kind: .file)
        let tok = try Tokenizer(path: tokenizer)
        if let eos, !(0..<tok.vocabSize).contains(eos) {
            throw LongTuneError("--eos \(eos) is not a token of \(tokenizer) (ids 0..<\(tok.vocabSize))")
        }
        guard let eosId = eos.map({ Int32($0) }) ?? tok.eosTokenId else {
            throw LongTuneError("\(tokenizer): no EOS token found "
                                + "(tokenizer_config.json eos_token or <|endoftext|>/</s>); pass --eos ID")
        }
        if inputs.contains(where: SFTPack.holdsConversations) {
            return try packConversations(tok, eos: eosId)
        }
        let writer = try PackedWriter(url: URL(fileURLWithPath: out), seqLen: seqLen)
        let packer = Packer(writer: writer, eos: eosId)
        let t0 = Date()
        do {
            try packer.add(files: inputs, tokenizer: tok) { done in
                let rate = Double(packer.tokens) / max(Date().timeIntervalSince(t0), 1e-3)
                Progress.line(String(format: "file %d/%d  %d documents  %d tokens  %d rows  %.0f tokens/s",
                                     done, inputs.count, packer.documents, packer.tokens, writer.rows, rate))
            }
            Progress.done()
            try finish(writer, tok, eos: eosId)
        } catch {
            writer.abandon()
            throw error
        }
        print("packed \(packer.documents) documents, \(packer.tokens) tokens into \(writer.rows) rows of \(seqLen) "
              + "-> \(out)"
              + (packer.remainder > 0 ? " (last \(packer.remainder) tokens dropped: less than a row)" : ""))
    }

    /// The file's attributes (docs/CONVENTIONS.md §8), then the rename into place.
    func finish(_ writer: PackedWriter, _ tok: Tokenizer, eos: Int32) throws {
        try writer.finish(attributes: ["format": "longtune-packed", "tokenizer": tokenizer],
                          integers: ["version": 1, "seq_len": seqLen, "vocab_size": tok.vocabSize,
                                     "eos_token_id": Int(eos)])
    }

    /// Instruction and chat records: samples with labels, packed whole (docs/CONVENTIONS.md §21).
    func packConversations(_ tok: Tokenizer, eos: Int32) throws {
        let writer = try PackedWriter(url: URL(fileURLWithPath: out), seqLen: seqLen, withLabels: true)
        let options = SFTPack.Options(seqLen: seqLen, format: format, trainOn: trainOn, truncate: truncate)
        let s: SFTPack.Summary
        do {
            s = try SFTPack.run(inputs: inputs, tokenizerPath: tokenizer, tokenizer: tok, eos: eos, writer: writer,
                                options: options) { Progress.line("\($0.samples) samples  \($0.rows) rows") }
            Progress.done()
            try finish(writer, tok, eos: eos)
        } catch {
            writer.abandon()
            throw error
        }
        print("packed \(s.samples) samples (\(s.format)) into \(s.rows) rows of \(seqLen) -> \(out): "
              + String(format: "%.1f%% filled, ", 100 * s.fill) + "\(s.trainedTokens) of \(s.tokens) tokens trained"
              + (s.truncated > 0
                 ? "; \(s.truncated) truncated on the prompt side, \(s.responsesCut) with their reply cut" : ""))
    }
}

extension TrainOn: ExpressibleByArgument {}
