import Adapters
import ArgumentParser
import Engine
import Foundation
import Llama
import Training

/// `longtune bench train`: steady-state LongLoRA training steps (forward, backward, AdamW), `TrainBenchmark`.
struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Tokens/s, achieved GFLOP/s and peak memory of LongLoRA training steps.")

    @OptionGroup var source: BenchModel
    @Option(help: "Tokens per step.") var context = 2048
    @Option(help: "full or s2 (Shift Short Attention, group ratio 1/4, boundaries).") var attention = "full"
    @Option(help: "LoRA rank on the attention projections (q/k/v/o; Phi-3: qkv/o).") var rank = 8
    @Option(help: """
        Fully trained extras besides LoRA: none (plain LoRA, as the usual peft comparison) \
        or embed_tokens,norm (LongLoRA).
        """)
    var trainable = "none"
    @Option(help: "Measured steps (the best is reported).") var steps = 2
    @Option(help: "Unmeasured warm-up steps before them (0 measures a model's very first step).") var warmup = 1
    @Option(help: """
        Per-layer activation checkpointing: on, off, or auto \
        (on above 4096 tokens, where the saved activations pass ~8 GiB).
        """)
    var checkpointing = "auto"
    @Option(help: """
        Under mpirun: ranks sharing each sequence (S2 only, docs/CONVENTIONS.md §17); the others are data parallel. \
        The report is the aggregate of all ranks.
        """)
    var sequenceParallel = 1
    @Flag(help: """
        Time each phase of the measured steps (frozen and LoRA products, attention forward and backward, row-wise \
        ops, LM head and loss, optimizer, the rest) and the parallel loops that left threads idle.
        """)
    var profile = false
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let options = try self.options()
        let r = try TrainBenchmark.run(name: source.model, options: options) { try source.load() }
        guard World.shared.isRoot else { return }
        if json { return print(r.json) }
        print("model \(r.model), \(r.context) tokens, attention \(r.attention), LoRA r=\(r.rank) on "
              + "\(r.targets.joined(separator: "/")), trained extras: \(r.trainableExtras), "
              + "checkpointing \(r.checkpointing ? "on" : "off"), frozen projections \(r.frozenProjections)")
        if options.compute == .bf16, let note = BF16GEMM.fallbackNote { print(note) }
        print(r.machine.text + (r.mpiRanks > 1 ? "\n\(r.mpiRanks) MPI ranks, \(r.sequenceParallel) per sequence: "
                                + "aggregate tokens/s, the slowest rank's step, the largest rank's peak" : ""))
        print(String(format: "step %.2f s   %.1f tokens/s   %.1f GFLOP/s achieved (%.0f%% of sgemm %.1f)   "
                             + "peak RSS %.2f GiB (tensors %.2f GiB)", r.secondsPerStep, r.tokensPerSecond,
                     r.achievedGFlops, 100 * r.fractionOfSgemm, r.sgemmGFlops, r.peakRSSGiB, r.peakTensorGiB))
        print(String(format: "FLOPs per token: %.3g (%@)", r.flopsPerToken, r.flopCount))
        if options.sequenceParallel > 1 {
            print(String(format: "halo exchange: %.1f MB sent per step (the busiest rank)", r.haloMBSentPerStep))
        }
        if let phases = r.profile { print(phases.table) }
    }

    /// The options as the library takes them.
    func options() throws -> TrainBenchmark.Options {
        var o = TrainBenchmark.Options()
        guard ["full", "s2"].contains(attention) else {
            throw LongTuneError("--attention: full or s2, got \(attention)")
        }
        guard let mode = TrainBenchmark.Checkpointing(rawValue: checkpointing) else {
            throw LongTuneError("--checkpointing: on, off or auto, got \(checkpointing)")
        }
        o.attention = attention == "s2" ? .s2(groupRatio: 0.25, roll: false) : .full
        o.checkpointing = mode
        o.trainable = try trainable == "none" ? [] : trainable.split(separator: ",").map { name in
            guard let extra = TrainableExtra(rawValue: String(name)) else {
                throw LongTuneError("--trainable: \"\(name)\" is not one of none, "
                                    + "\(TrainableExtra.choices.replacingOccurrences(of: " | ", with: ", "))")
            }
            return extra
        }
        (o.context, o.rank, o.steps, o.warmup) = (context, rank, steps, warmup)
        (o.sequenceParallel, o.profile, o.compute) = (sequenceParallel, profile, source.storage.compute)
        return o
    }
}
