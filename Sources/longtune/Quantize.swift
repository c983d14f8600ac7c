import ArgumentParser
import Engine
import Foundation
import Llama
import Training

/// `longtune quantize`: a model as a Hugging Face bitsandbytes 4-bit checkpoint.
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model directory as a bitsandbytes 4-bit (NF4) checkpoint that transformers loads unchanged.")

    @Argument(help: "Model directory (config.json + *.safetensors) in fp32, fp16 or bf16.") var model: String
    @Option(help: "Output model directory.") var out: String
    @Option(help: "Storage: nf4 (QLoRA's 4-bit NormalFloat).") var format: QuantizationKind = .nf4
    @Flag(help: "Keep the block scales in fp32 instead of double-quantizing them to 8 bits.")
    var noDoubleQuantization = false
    @Flag(help: "Replace an existing output directory.") var force = false

    func run() throws {
        guard let q = Quantization(format, doubleQuant: !noDoubleQuantization) else {
            throw LongTuneError("--format: \(format.rawValue) writes nothing quantized; use nf4")
        }
        let r = try QuantizedExport.run(model: URL(fileURLWithPath: model), out: URL(fileURLWithPath: out),
                                        quantization: q, force: force)
        print(String(format: "%@: %d projections in %@, %d tensors copied, %.1f MiB", out, r.quantized, q.kind,
                     r.copied, Double(r.bytes) / 1_048_576))
    }
}
