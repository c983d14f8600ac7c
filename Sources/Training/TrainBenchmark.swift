import Adapters
import Engine
import Foundation
import Llama

/// `bench train`: steady-state LongLoRA training steps of a model on random tokens, run as the trainer runs them
/// (`TrainingStep.run`, gradients summed over the data-parallel ranks, AdamW), timed, with the FLOPs they perform
/// (`FlopCount`) against the same process's sgemm and the peak memory.
public struct TrainBenchmark {
    /// Per-layer activation checkpointing: on, off, or auto (on above 4096 tokens, where the saved activations of a
    /// small model pass ~8 GiB).
    public enum Checkpointing: String, CaseIterable, Sendable { case on, off, auto }

    public struct Options: Sendable {
        public var context = 2048
        public var attention: AttentionMode = .full
        /// LoRA rank on the attention projections (`LoRATarget.attention(of:)`), alpha 2·rank.
        public var rank = 8
        public var trainable: [TrainableExtra] = []
        /// Measured steps (the best is reported) after `warmup` unmeasured ones.
        public var steps = 2, warmup = 1
        public var checkpointing = Checkpointing.auto
        /// Ranks sharing each sequence under mpirun (S2 only, docs/CONVENTIONS.md §17).
        public var sequenceParallel = 1
        /// Time each phase of the measured steps (`StepProfile`).
        public var profile = false
        public var compute = ComputeDType.fp32

        public init() {}

        var checkpointLayers: Bool { checkpointing == .on || (checkpointing == .auto && context > 4096) }

        func validate() throws {
            guard steps > 0, warmup >= 0 else {
                throw LongTuneError("--steps must be positive and --warmup not negative")
            }
            guard context >= 2, rank >= 1 else {
                throw LongTuneError("--context must be at least 2 and --rank positive")
            }
        }
    }

    /// What one benchmark measured; its JSON keys are `bench train --json`'s.
    public struct Result: Encodable {
        public let model: String
        public let context: Int
        public let attention: String
        public let rank: Int
        public let targets: [String]
        public let trainableExtras: String
        public let checkpointing: Bool
        public let frozenProjections: String
        public let secondsPerStep: Double
        public let tokensPerSecond: Double
        public let flopsPerToken: Double
        public let flopCount: String
        public let achievedGFlops: Double
        public let sgemmGFlops: Double
        public let peakRSSGiB: Double
        public let peakTensorGiB: Double
        public let machine: MachineReport
        public let mpiRanks: Int
        public let sequenceParallel: Int
        public let haloMBSentPerStep: Double
        public let profile: StepProfile?

        public var fractionOfSgemm: Double { achievedGFlops / sgemmGFlops }

        enum CodingKeys: String, CodingKey {
            case model, context, attention, rank, targets, checkpointing, machine
            case trainableExtras = "trainable_extras", frozenProjections = "frozen_projections"
            case secondsPerStep = "seconds_per_step", tokensPerSecond = "tokens_per_second"
            case flopsPerToken = "flops_per_token", flopCount = "flop_count", achievedGFlops = "achieved_gflops"
            case sgemmGFlops = "sgemm_gflops", fractionOfSgemm = "fraction_of_sgemm", peakRSSGiB = "peak_rss_gib"
            case peakTensorGiB = "peak_tensor_gib", mpiRanks = "mpi_ranks", sequenceParallel = "sequence_parallel"
            case haloMBSentPerStep = "halo_mb_sent_per_step", profile = "profile_seconds_per_step"
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(model, forKey: .model); try c.encode(context, forKey: .context)
            try c.encode(attention, forKey: .attention); try c.encode(rank, forKey: .rank)
            try c.encode(targets, forKey: .targets); try c.encode(trainableExtras, forKey: .trainableExtras)
            try c.encode(checkpointing, forKey: .checkpointing)
            try c.encode(frozenProjections, forKey: .frozenProjections)
            try c.encode(secondsPerStep, forKey: .secondsPerStep)
            try c.encode(tokensPerSecond, forKey: .tokensPerSecond)
            try c.encode(flopsPerToken, forKey: .flopsPerToken); try c.encode(flopCount, forKey: .flopCount)
            try c.encode(achievedGFlops, forKey: .achievedGFlops); try c.encode(sgemmGFlops, forKey: .sgemmGFlops)
            try c.encode(fractionOfSgemm, forKey: .fractionOfSgemm); try c.encode(peakRSSGiB, forKey: .peakRSSGiB)
            try c.encode(peakTensorGiB, forKey: .peakTensorGiB); try c.encode(machine, forKey: .machine)
            try c.encode(mpiRanks, forKey: .mpiRanks); try c.encode(sequenceParallel, forKey: .sequenceParallel)
            try c.encode(haloMBSentPerStep, forKey: .haloMBSentPerStep)
            try c.encode(profile?.json, forKey: .profile)
        }

        /// The JSON `bench train --json` prints (sorted keys, as `bench machine --json`).
        public var json: String { String(decoding: (try? MachineReport.encoder.encode(self)) ?? Data(), as: UTF8.self) }
    }

    /// Runs the benchmark on the model `load` gives (called once the options are checked, so that the peak memory
    /// includes it), `name` naming it in the result.
    public static func run(name: String, options o: Options, world: World = .shared,
                           load: () throws -> LlamaForCausalLM) throws -> Result {
        try o.validate()
        let share = try ParallelLayout(ranksPerSequence: o.sequenceParallel, length: o.context, attention: o.attention,
                                       world: world, option: "--sequence-parallel").share
        let sgemm = world.sum(BLAS.measureGFlops(m: 2048, n: 2048, k: 2048))   // every rank's at once: the machines'
        MemoryStats.resetProcessPeakRSS()
        let model = try load()
        var lora = LoRAConfig()
        lora.rank = o.rank; lora.alpha = Double(2 * o.rank)
        lora.targets = LoRATarget.attention(of: model.config)
        lora.trainable = o.trainable
        let adapted = try LoRAModel(model, config: lora, seed: 1)
        model.setComputeDType(o.compute)
        let (best, phases) = try timeSteps(adapted, options: o, share: share, world: world)
        let flops = try FlopCount(config: model.config, lora: lora, context: o.context, attention: o.attention,
                                  checkpointing: o.checkpointLayers)
        let sequences = world.size / o.sequenceParallel   // computed at once, one per data-parallel group
        let tokensPerSecond = Double(sequences * o.context) / best
        // Halo bytes per step, the busiest rank's (the README's traffic figures, docs/CONVENTIONS.md §17).
        let haloSent = (share?.exchange as? SequenceNeighbours).map { Double($0.floatsSent * 4) } ?? 0
        return Result(
            model: name, context: o.context, attention: o.attention == .full ? "full" : "s2", rank: o.rank,
            targets: lora.targets.map(\.rawValue),
            trainableExtras: o.trainable.isEmpty ? "none" : o.trainable.map(\.rawValue).joined(separator: ","),
            checkpointing: o.checkpointLayers, frozenProjections: model.frozenStorageName, secondsPerStep: best,
            tokensPerSecond: tokensPerSecond, flopsPerToken: flops.perToken, flopCount: flops.explanation,
            achievedGFlops: flops.perToken * tokensPerSecond / 1e9, sgemmGFlops: sgemm,
            peakRSSGiB: world.max(Double(MemoryStats.processPeakRSS()) / 1_073_741_824),   // the largest rank's
            peakTensorGiB: world.max(Double(MemoryStats.peak) / 1_073_741_824), machine: MachineReport.current(),
            mpiRanks: world.size, sequenceParallel: o.sequenceParallel,
            haloMBSentPerStep: world.max(haloSent / Double(o.warmup + o.steps) / 1e6), profile: phases)
    }

    /// The warm-up steps, then the measured ones: the best step (the slowest rank's) and, when profiling, the phases.
    static func timeSteps(_ lora: LoRAModel, options o: Options, share: SequenceShare?,
                          world: World) throws -> (best: Double, phases: StepProfile?) {
        let opt = AdamW(groups: [.init(parameters: lora.trainableParameters, lr: 1e-4, weightDecay: 0)])
        var rng = SplitMix64(seed: 2)
        let vocab = UInt64(lora.base.config.vocabSize)
        let ids = (0..<o.context).map { _ in Int32(rng.next() % vocab) }
        func step() throws {
            _ = try TrainingStep.run(lora, ids: ids, attention: o.attention, checkpointLayers: o.checkpointLayers,
                                     share: share)
            world.sumGradients(lora.trainableParameters)   // as the trainer (§16)
            opt.update()
        }
        for _ in 0..<o.warmup { try step() }
        var best = Double.infinity, total = 0.0
        Profile.reset()
        Profile.isOn = o.profile
        defer { Profile.isOn = false }
        for _ in 0..<o.steps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try step()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            total += seconds
            best = min(best, world.max(seconds))   // the slowest rank
        }
        let phases = o.profile ? StepProfile(seconds: Profile.seconds, idleLoops: Profile.underfilledSeconds,
                                             total: total, steps: o.steps) : nil
        return (best, phases)
    }
}
