import ArgumentParser
import Engine
import Formats
import Foundation

/// `longtune import-gguf`: a Hugging Face model directory from a llama.cpp GGUF file.
struct ImportGGUF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-gguf",
        abstract: "Convert a llama.cpp GGUF file "
            + "(\(GGUFFile.layouts.sorted { $0.key < $1.key }.map(\.value.name).joined(separator: "/"))) "
            + "into a Hugging Face model directory.")

    @Argument(help: "The .gguf file.") var file: String
    @Option(help: "Output directory.") var out: String
    @Option(help: "Storage type of the written weights: fp32 (exact dequantized values), fp16 or bf16.")
    var dtype: DType = .fp32
    @Flag(help: "Overwrite an existing output directory.") var force = false

    func run() throws {
        let gguf = try GGUFFile(URL(fileURLWithPath: file))
        try GGUFImport.run(gguf, to: URL(fileURLWithPath: out), dtype: dtype, force: force) {
            FileHandle.standardError.write(Data(($0 + "\n").utf8))
        }
        print("imported \(file) -> \(out) (\(gguf.tensors.count) tensors)")
    }
}

extension DType: ExpressibleByArgument {}
