import Adapters
import Engine
import Formats
import Foundation
import Llama

/// Set by SIGINT/SIGTERM: the trainer finishes the current step, writes a checkpoint and stops.
nonisolated(unsafe) public var stopRequested = false

/// The training loop of a recipe: data, LongLoRA model, AdamW with schedule and clipping,
/// periodic evaluation, checkpoints, progress and metrics (docs/ARCHITECTURE.md walks one step).
public final class Trainer {
    public let recipe: Recipe
    public let runDir: URL
    public let lora: LoRAModel
    public let optimizer: AdamW
    let data: DataLoader
    let evalData: DataLoader?
    let metricsLog: MetricsLog
    public private(set) var step = 0
    /// The step a resume continues from: metrics.jsonl is cut back to it once the run lock is held.
    var resumedAt: Int?
    /// Every step's metrics record so far (checkpoints keep them).
    public private(set) var metrics: [MetricRecord] = []
    let log: (String) -> Void
    /// The ranks this run spans (a world of one without mpirun).
    let world = World.shared
    /// Runs while a checkpoint is half written (tests kill the process there).
    let checkpointHook: (Int) -> Void
    /// Sequence parallelism (docs/CONVENTIONS.md §17): this rank's share of each sequence, nil with one rank per
    /// sequence. The world is `dataRanks` groups of `attention.sequence_parallel` consecutive ranks.
    let share: SequenceShare?
    /// The data-parallel groups and this rank's (each group computes a step's sequences with index ≡ its number).
    let dataRanks: Int, dataRank: Int

    public init(recipe: Recipe, resume: String? = nil, log: @escaping (String) -> Void = { print($0) },
                checkpointHook: @escaping (_ step: Int) -> Void = { _ in }) throws {
        self.recipe = recipe
        self.log = log
        self.checkpointHook = checkpointHook
        let layout = try ParallelLayout(ranksPerSequence: recipe.attention.sequence_parallel,
                                        length: recipe.model.context_length, attention: recipe.attentionMode,
                                        world: world, option: "attention.sequence_parallel")
        (share, dataRanks, dataRank) = (layout.share, layout.dataRanks, layout.dataRank)
        runDir = URL(fileURLWithPath: recipe.checkpoints.dir)
        metricsLog = MetricsLog(url: runDir.appendingPathComponent("metrics.jsonl"))
        let t = recipe.training
        let model = try ModelSource.load(recipe.model.path, ropeOverride: recipe.model.rope_scaling,
                                         overrideSource: "recipe model.rope_scaling", seed: t.seed,
                                         quantization: recipe.model.frozenStorage, compute: recipe.model.compute_dtype)
        lora = try LoRAModel(model, config: recipe.adapter, seed: t.seed)
        model.setComputeDType(recipe.model.compute_dtype)
        optimizer = Self.optimizer(lora, t)
        let vocab = model.config.vocabSize, length = recipe.model.context_length
        data = try DataLoader(recipe.data.train, contextLength: length, vocabSize: vocab,
                              shuffleSeed: recipe.data.shuffle ? t.seed : nil)
        evalData = try recipe.data.eval.map {
            try DataLoader($0, contextLength: length, vocabSize: vocab, shuffleSeed: nil, key: "data.eval")
        }
        if let resume { try restore(resume) }
    }

    /// AdamW over the adapters and the extras; norms and embeddings take no weight decay (as LongLoRA's
    /// and HF's trainers).
    static func optimizer(_ lora: LoRAModel, _ t: Recipe.Training) -> AdamW {
        AdamW(groups: [
            .init(parameters: lora.adapterParameters, lr: t.learning_rate, weightDecay: t.weight_decay),
            .init(parameters: lora.extras, lr: t.extras_learning_rate ?? t.learning_rate, weightDecay: 0),
        ])
    }

    /// Loads a checkpoint (a directory, or "latest" of this run) and checks it belongs to this recipe and model.
    func restore(_ spec: String) throws {
        let ck = try Checkpoint.read(try checkpointToResume(spec))
        let s = ck.state
        guard lora.base.config.matches(fingerprint: s.modelConfig) else {
            throw LongTuneError("\(ck.url.path): checkpoint was trained on a different model "
                                + "(config differs from \(recipe.model.path))")
        }
        try requireSameRun(s.recipe, checkpoint: ck.url)
        guard s.step >= 0, s.cursor >= 0 else {
            throw LongTuneError("\(ck.url.path)/state.json: step \(s.step) and cursor \(s.cursor) must not be "
                                + "negative; the checkpoint is damaged, resume from an earlier one")
        }
        let params = lora.trainableParameters
        guard params.map(\.0) == s.trainable else {
            throw LongTuneError("\(ck.url.path): trainable tensors differ from this recipe's")
        }
        var m: [String: Tensor] = [:], v: [String: Tensor] = [:]
        for (n, p) in params {
            let t = try ck.tensors.tensor(n)
            guard t.shape == p.shape else {
                throw LongTuneError("\(ck.url.path): \(n) has shape \(t.shape), expected \(p.shape)")
            }
            p.value = t
            func moment(_ name: String) throws -> Tensor {
                let t = try ck.optimizer.tensor(name)
                guard t.shape == p.shape else {
                    throw LongTuneError("\(ck.url.path)/optimizer.safetensors: \(name) has shape \(t.shape), expected "
                                        + "\(p.shape); the checkpoint is damaged, resume from an earlier one")
                }
                return t
            }
            m[n] = try moment("m." + n); v[n] = try moment("v." + n)
        }
        optimizer.restore(step: s.step, m: m, v: v)
        step = s.step
        data.seek(to: s.cursor)
        metrics = s.metrics
        resumedAt = step
        log("resumed from \(ck.url.path) at step \(step)")
    }

    /// The checkpoint `spec` names; for "latest", the newest complete one when the link is missing or
    /// dangling (a crash between writing a checkpoint and linking it).
    func checkpointToResume(_ spec: String) throws -> URL {
        guard spec == "latest" else {
            let url = URL(fileURLWithPath: spec)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw LongTuneError("\(url.path): no checkpoint to resume from (run without --resume to start fresh)")
            }
            return url
        }
        let latest = runDir.appendingPathComponent("latest")
        if FileManager.default.fileExists(atPath: latest.path) { return latest }   // follows the link
        guard let newest = Checkpoint.newestComplete(runDir: runDir) else {
            throw LongTuneError("\(runDir.path): no checkpoint to resume from (run without --resume to start fresh)")
        }
        log("\(latest.path) is missing or dangling; resuming from the newest complete checkpoint, "
            + "\(newest.lastPathComponent)")
        return newest
    }

    /// The sections that must match for a resume to continue the same run.
    func requireSameRun(_ theirs: Recipe, checkpoint: URL) throws {
        let mine = recipe
        // How many ranks share a sequence does not change what is trained: a run resumes under any.
        var theirAttention = theirs.attention
        theirAttention.sequence_parallel = mine.attention.sequence_parallel
        let sections = [("model", mine.model == theirs.model), ("adapter", mine.adapter == theirs.adapter),
                        ("attention", mine.attention == theirAttention),
                        ("data.train", mine.data.train == theirs.data.train)]
        for (what, same) in sections where !same {
            throw LongTuneError("\(checkpoint.path): checkpoint comes from a recipe with a different \(what) section; "
                                + "resume with the recipe it was trained with")
        }
    }

    func saveCheckpoint() throws -> URL {
        let state = TrainerState(step: step, cursor: data.cursor, recipe: recipe,
                                 modelConfig: lora.base.config.fingerprint,
                                 trainable: lora.trainableParameters.map(\.0), metrics: metrics,
                                 versions: ["longtune": LongTuneVersion.string, "format": "1",
                                            "machine": Machine.summary])
        let step = self.step
        let tensors = lora.trainableParameters.map { ($0.0, $0.1.value) }
        return try Checkpoint.write(runDir: runDir, state: state, tensors: tensors, m: optimizer.m, v: optimizer.v,
                                    keep: recipe.checkpoints.keep, afterFirstFile: { self.checkpointHook(step) })
    }

    /// Mean loss over the first `eval_sequences` evaluation sequences: full attention, no dropout,
    /// the same targets as training (`CausalLM.targets`).
    public func evaluate() throws -> Double? {
        guard let evalData else { return nil }
        lora.eval()
        var total = 0.0
        let n = min(recipe.data.eval_sequences, evalData.count)
        for i in 0..<n {
            let s = try evalData.sequence(i)
            let ctx = try lora.base.context(length: s.ids.count, documentStarts: s.documentStarts)
            let loss = try lora.base.loss(Graph(recording: false), ids: s.ids, labels: s.labels,
                                          documentStarts: s.documentStarts, context: ctx)
            total += Double(loss.value[0])
        }
        return total / Double(n)
    }

    /// Trains to `training.steps`, checkpointing every `checkpoints.every` steps, at the end, and on SIGINT/SIGTERM.
    /// Holds the run directory's lock throughout (`lock`, when the caller took it already).
    /// Under MPI only rank 0 writes (checkpoints, metrics, progress) and evaluates; every rank trains.
    public func run(stopAfter: Int? = nil, lock: RunLock? = nil, progress: (String) -> Void = { _ in }) throws {
        let root = world.isRoot
        if root { try Checkpoint.prepare(runDir: runDir) }
        let held = root ? try lock ?? RunLock(runDir: runDir) : nil
        defer { withExtendedLifetime(held) {} }
        if root {
            Checkpoint.removeStaleTemporaries(runDir: runDir)
            if let resumedAt { try metricsLog.truncate(afterStep: resumedAt) }
            if step == 0 { try evaluateBaseline() }
        }
        let start = Date(), startStep = step
        while step < recipe.training.steps {
            let t0 = Date()
            let (loss, norm, lr) = try optimizerStep()
            step += 1
            var record = MetricRecord(
                step: step, loss: loss, lr: lr, gradNorm: norm, elapsed: Date().timeIntervalSince(start),
                tokensPerSecond: Double(sequencesPerStep * recipe.model.context_length) / Date().timeIntervalSince(t0),
                peakRSSGiB: world.max(Double(MemoryStats.processPeakRSS()) / 1_073_741_824))   // the largest rank's
            if root, recipe.logging.eval_every > 0,
               step % recipe.logging.eval_every == 0 || step == recipe.training.steps,
               let e = try evaluate() {
                record.evalLoss = e
            }
            metrics.append(record)
            if root { try metricsLog.append(record) }
            if root, step % recipe.logging.every == 0 || step == recipe.training.steps {
                progress(progressLine(record, stepsThisRun: step - startStep))
            }
            // A signal reaches mpirun's ranks at different moments: all stop after the same step.
            let stopping = world.any(stopRequested) || step == stopAfter
            if step % recipe.checkpoints.every == 0 || step == recipe.training.steps || stopping {
                let url = root ? try saveCheckpoint() : runDir
                if stopping {
                    log("stopped at step \(step); checkpoint \(url.path). Resume with --resume.")
                    return
                }
            }
        }
    }

    /// The evaluation loss before training: the baseline the fine-tune is measured against.
    func evaluateBaseline() throws {
        guard recipe.logging.eval_every > 0, let e = try evaluate() else { return }
        let record = MetricRecord(step: 0, evalLoss: e)
        metrics.append(record)
        try metricsLog.append(record)
        log(String(format: "eval loss before training: %.4f", e))
    }

    var sequencesPerStep: Int { recipe.training.batch_size * recipe.training.gradient_accumulation }

    /// One optimizer step: forward and backward of every sequence of the step (gradients summed,
    /// each scaled by 1/sequences), clipping, AdamW at the schedule's rate. Returns the mean loss,
    /// the gradient norm before clipping and the adapters' learning rate (docs/CONVENTIONS.md §7).
    func optimizerStep() throws -> (loss: Double, gradNorm: Double, lr: Double) {
        let t = recipe.training, perStep = sequencesPerStep
        var lossSum = 0.0
        for micro in 0..<perStep {
            // Under MPI each data-parallel group computes every dataRanks-th sequence of the step (docs/CONVENTIONS.md
            // §16), each rank of the group its share of the sequence's rows (§17).
            guard micro % dataRanks == dataRank else { data.seek(to: data.cursor + 1); continue }
            // A fresh dropout mask per sequence; a checkpointed layer's replay reuses it.
            lora.seedDropout(step: UInt64(step * perStep + micro), seed: t.seed)
            let s = try data.next()
            let loss = try TrainingStep.run(lora, ids: s.ids, labels: s.labels, documentStarts: s.documentStarts,
                                            attention: recipe.attentionMode,
                                            checkpointLayers: t.activation_checkpointing,
                                            share: share, lossScale: 1 / Float(perStep))
            lossSum += Double(loss)
        }
        // Every rank ends with the whole step's gradients and loss.
        world.sumGradients(lora.trainableParameters)
        lossSum = world.sum(lossSum)
        guard lossSum.isFinite else {
            throw LongTuneError("step \(step + 1): loss is \(lossSum / Double(perStep)); stopping. "
                                + "The last good checkpoint in \(runDir.path) is intact; "
                                + "lower training.learning_rate or set training.max_grad_norm and resume")
        }
        let norm = clipGradients(lora.trainableParameters, maxNorm: t.max_grad_norm)
        guard norm.isFinite else {
            throw LongTuneError("step \(step + 1): gradient norm is \(norm); stopping. The last good checkpoint in "
                                + "\(runDir.path) is intact")
        }
        let scale = recipe.lrScale(step: step)
        optimizer.update(lrScale: scale)
        return (lossSum / Double(perStep), norm, t.learning_rate * scale)
    }

    func progressLine(_ r: MetricRecord, stepsThisRun: Int) -> String {
        let total = recipe.training.steps, elapsed = r.elapsed ?? 0
        let eta = elapsed / Double(stepsThisRun) * Double(total - step)
        var s = String(format: "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s (%d threads)  "
                       + "elapsed %.0fs  ETA %.0fs", step, total, r.loss ?? .nan, r.lr ?? .nan, r.gradNorm ?? .nan,
                       r.tokensPerSecond ?? .nan, Parallel.threads, elapsed, eta)
        s += String(format: "  peak %.2f GiB", r.peakRSSGiB ?? .nan)
        if let e = r.evalLoss { s += String(format: "  eval loss %.4f", e) }
        return s
    }
}

public enum LongTuneVersion { public static let string = "0.1.0" }
