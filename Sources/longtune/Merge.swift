import ArgumentParser
import Engine
import Foundation
import Training

/// `longtune merge`: a checkpoint merged into a Hugging Face model directory (and optionally a peft adapter).
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge a checkpoint's adapters into fp16/bf16/fp32 weights that transformers loads unchanged.")

    @Argument(help: "Checkpoint directory (e.g. checkpoints/run/latest).") var checkpoint: String
    @Option(help: "Output model directory.") var out: String
    @Option(help: "Weight type: fp16, bf16 or fp32.") var dtype: DType = .fp16
    @Option(help: "Base model directory (default: the recipe's model.path).") var base: String?
    @Option(help: "Also write a peft adapter (adapter_config.json + adapter_model.safetensors) here.") var peft: String?
    @Option(help: "Largest shard in MiB before splitting into model-0000N-of-0000M.safetensors.") var maxShardMib = 2048
    @Flag(help: ArgumentHelp("QLoRA runs: merge into the quantized base the adapter was trained on (dequantized), "
                             + "not the original full-precision weights."))
    var fromQuantized = false
    @Flag(help: "Replace an existing output directory.") var force = false

    func run() throws {
        guard (1...Merge.maxShardMiB).contains(maxShardMib) else {
            throw LongTuneError("--max-shard-mib: a shard size in MiB from 1 to \(Merge.maxShardMiB) (1 TiB), "
                                + "got \(maxShardMib)")
        }
        let report = try Merge.run(checkpoint: URL(fileURLWithPath: checkpoint), out: URL(fileURLWithPath: out),
                                   dtype: dtype, base: base, force: force, maxShardBytes: maxShardMib << 20,
                                   fromQuantized: fromQuantized, peft: peft.map { URL(fileURLWithPath: $0) })
        print("merged \(report.tensors) tensors into \(out) "
              + "(\(report.shards) shard\(report.shards == 1 ? "" : "s"), \(dtype.rawValue))")
        for (name, count) in report.outOfRange {
            print("warning: \(name): \(count) values beyond fp16's range were clamped to ±65504; "
                  + "use --dtype bf16 or fp32 to keep them")
        }
        if let peft { print("peft adapter -> \(peft)") }
    }
}
