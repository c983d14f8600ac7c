import Adapters
import ArgumentParser
import Engine
import Formats
import Foundation
import Llama
import Training

/// `longtune bench train`: steady-state LongLoRA training steps (forward, backward, AdamW).
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
        guard steps > 0, warmup >= 0 else { throw EngineError("--steps must be positive and --warmup not negative") }
        guard context >= 2, rank >= 1 else { throw EngineError("--context must be at least 2 and --rank positive") }
        guard ["full", "s2"].contains(attention) else { throw EngineError("--attention: full or s2, got \(attention)") }
        guard ["on", "off", "auto"].contains(checkpointing) else {
            throw EngineError("--checkpointing: on, off or auto, got \(checkpointing)")
        }
        let world = World.shared
        let mode: AttentionMode = attention == "s2" ? .s2(groupRatio: 0.25, roll: false) : .full
        let share = try ParallelLayout(ranksPerSequence: sequenceParallel, length: context, attention: mode, world: world,
                                       option: "--sequence-parallel").share
        let sgemm = world.sum(BLAS.measureGFlops(m: 2048, n: 2048, k: 2048))   // every rank's at once: the machines'
        MemoryStats.resetProcessPeakRSS()
        let lm = try source.load()
        var cfg = LoRAConfig(); cfg.rank = rank; cfg.alpha = Double(2 * rank)
        cfg.targets = LoRATarget.attention(of: lm.config)
        cfg.trainable = try trainable == "none" ? [] : trainable.split(separator: ",").map { name in
            guard let extra = TrainableExtra(rawValue: String(name)) else {
                throw EngineError("--trainable: \"\(name)\" is not one of none, "
                                  + "\(TrainableExtra.choices.replacingOccurrences(of: " | ", with: ", "))")
            }
            return extra
        }
        let lora = try LoRAModel(lm, config: cfg, seed: 1)
        lm.setComputeDType(source.storage.compute)
        let opt = AdamW(groups: [.init(parameters: lora.trainableParameters, lr: 1e-4, weightDecay: 0)])
        var rng = SplitMix64(seed: 2)
        let ids = (0..<context).map { _ in Int32(rng.next() % UInt64(lm.config.vocabSize)) }
        let ckpt = checkpointing == "on" || (checkpointing == "auto" && context > 4096)

        func step() throws -> Float {
            let loss = try TrainingStep.run(lora, ids: ids, attention: mode, checkpointLayers: ckpt, share: share)
            world.sumGradients(lora.trainableParameters)   // as the trainer (§16)
            opt.update()
            return loss
        }
        for _ in 0..<warmup { _ = try step() }
        var best = Double.infinity, total = 0.0
        Profile.reset()
        Profile.isOn = profile
        for _ in 0..<steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try step()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            total += seconds
            best = min(best, world.max(seconds))   // the slowest rank
        }
        Profile.isOn = false
        let phases = profile ? StepProfile(seconds: Profile.seconds, idleLoops: Profile.underfilledSeconds,
                                           total: total, steps: steps) : nil
        let flops = try FlopCount(config: lm.config, lora: cfg, context: context, attention: mode, checkpointing: ckpt)
        let sequences = world.size / sequenceParallel   // computed at once, one per data-parallel group
        let tokensPerSecond = Double(sequences * context) / best
        let achieved = flops.perToken * tokensPerSecond / 1e9
        let peak = world.max(Double(MemoryStats.processPeakRSS()) / 1_073_741_824)   // the largest rank's
        let tensorPeak = world.max(Double(MemoryStats.peak) / 1_073_741_824)
        // Halo bytes per step, the busiest rank's (the README's traffic figures, docs/CONVENTIONS.md §17).
        let haloSent = (share?.exchange as? SequenceNeighbours).map { Double($0.floatsSent * 4) } ?? 0
        let haloMBPerStep = world.max(haloSent / Double(warmup + steps) / 1e6)
        guard world.isRoot else { return }
        let storage = lm.frozenStorageName
        if json {
            let obj: [String: Any] = ["model": source.model, "context": context, "trainable_extras": trainable,
                                      "attention": attention, "rank": rank, "checkpointing": ckpt,
                                      "frozen_projections": storage,
                                      "seconds_per_step": best, "tokens_per_second": tokensPerSecond,
                                      "flops_per_token": flops.perToken, "achieved_gflops": achieved,
                                      "sgemm_gflops": sgemm, "fraction_of_sgemm": achieved / sgemm,
                                      "peak_rss_gib": peak, "peak_tensor_gib": tensorPeak,
                                      "flop_count": flops.explanation, "machine": MachineReport.current().jsonObject,
                                      "mpi_ranks": world.size, "sequence_parallel": sequenceParallel,
                                      "halo_mb_sent_per_step": haloMBPerStep,
                                      "profile_seconds_per_step": phases.map { $0.json } ?? NSNull()]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj,
                                                              options: [.prettyPrinted, .sortedKeys]),
                         as: UTF8.self))
        } else {
            let targets = cfg.targets.map(\.rawValue).joined(separator: "/")
            print("model \(source.model), \(context) tokens, attention \(attention), LoRA r=\(rank) on \(targets), "
                  + "trained extras: \(trainable), checkpointing \(ckpt ? "on" : "off"), frozen projections \(storage)")
            if source.storage.compute == .bf16, let note = BF16GEMM.fallbackNote { print(note) }
            print(MachineReport.current().text
                  + (world.size > 1 ? "\n\(world.size) MPI ranks, \(sequenceParallel) per sequence: aggregate tokens/s, "
                     + "the slowest rank's step, the largest rank's peak" : ""))
            print(String(format: "step %.2f s   %.1f tokens/s   %.1f GFLOP/s achieved (%.0f%% of sgemm %.1f)   "
                                 + "peak RSS %.2f GiB (tensors %.2f GiB)",
                         best, tokensPerSecond, achieved, 100 * achieved / sgemm, sgemm, peak, tensorPeak))
            print(String(format: "FLOPs per token: %.3g (%@)", flops.perToken, flops.explanation))
            if share != nil { print(String(format: "halo exchange: %.1f MB sent per step (the busiest rank)", haloMBPerStep)) }
            if let phases { print(phases.table) }
        }
    }
}
