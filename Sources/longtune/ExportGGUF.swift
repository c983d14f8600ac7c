import ArgumentParser
import Engine
import Foundation
import Training

/// `longtune export-gguf`: a model directory or checkpoint as one llama.cpp GGUF file (or a LoRA adapter GGUF).
struct ExportGGUF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-gguf",
        abstract: "Write a model directory or a checkpoint (merged on the fly) as a GGUF file for llama.cpp, Ollama "
            + "and LM Studio, trained RoPE scaling and chat template included.")

    @Argument(help: "A model directory (config.json) or a checkpoint (e.g. checkpoints/run/latest).") var source: String
    @Option(help: "The .gguf file to write.") var out: String
    @Option(help: ArgumentHelp("Tensor types: \(GGUFExport.FileType.allCases.map(\.rawValue).joined(separator: ", ")) "
                               + "(K-quant mixes as llama-quantize chooses them per tensor)."))
    var type: GGUFExport.FileType = .f16
    @Option(help: "Base model for a checkpoint (default: the recipe's model.path).") var base: String?
    @Flag(help: ArgumentHelp("QLoRA runs: merge into the quantized base the adapter was trained on (dequantized), "
                             + "not the original full-precision weights."))
    var fromQuantized = false
    @Flag(help: "Write only the checkpoint's LoRA adapter, for llama.cpp's --lora on the base model's GGUF.")
    var adapter = false
    @Option(help: ArgumentHelp("llama.cpp's pre-tokenizer name (tokenizer.ggml.pre), for a byte-level BPE tokenizer "
                               + "LongTune does not recognize.")) var tokenizerPre: String?
    @Flag(help: "List each tensor's type on stderr.") var verbose = false

    func run() throws {
        let log: (String) -> Void = { if verbose { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } }
        let src = URL(fileURLWithPath: source), dst = URL(fileURLWithPath: out)
        let report = adapter
            ? try GGUFExport.runAdapter(checkpoint: src, out: dst, type: type, log: log)
            : try GGUFExport.run(source: src, out: dst, type: type, base: base, fromQuantized: fromQuantized,
                                 tokenizerPre: tokenizerPre, log: log)
        let types = report.types.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let mib = String(format: "%.1f", Double(report.bytes) / 1048576)
        print("wrote \(out): \(report.tensors) tensors (\(types)), \(mib) MiB")
        for note in report.notes { print("note: " + note) }
        if !adapter { print("context \(report.config.maxPositionEmbeddings) tokens\(report.ropeNote)") }
    }
}

extension GGUFExport.FileType: ExpressibleByArgument {}
