import Adapters
import Engine
import Formats
import Foundation
import Llama

/// Set by SIGINT/SIGTERM: the trainer finishes the current step, writes a checkpoint and stops.
nonisolated(unsafe) public var stopRequested = false

/// The training loop of a recipe: data, LongLoRA model, AdamW with schedule and clipping,
/// periodic evaluation, checkpoints, progress and metrics.
public final class Trainer {
    public let recipe: Recipe
    public let runDir: URL
    public let lora: LoRAModel
    public let optimizer: AdamW
    let data: DataLoader
    let evalData: DataLoader?
    public private(set) var step = 0
    var metrics: [[String: Double]] = []
    let modelConfig: String
    let log: (String) -> Void

    public init(recipe: Recipe, resume: String? = nil, log: @escaping (String) -> Void = { print($0) }) throws {
        self.recipe = recipe
        self.log = log
        runDir = URL(fileURLWithPath: recipe.checkpoints.dir)
        let model = try ModelSource.load(recipe.model.path, ropeOverride: recipe.model.rope_scaling, seed: recipe.training.seed)
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        modelConfig = String(decoding: try enc.encode(model.config), as: UTF8.self)
        lora = try LoRAModel(model, config: recipe.adapter, seed: recipe.training.seed)
        let extrasLR = recipe.training.extras_learning_rate ?? recipe.training.learning_rate
        let decay = recipe.training.weight_decay
        // Norms and embeddings take no weight decay (as LongLoRA's and HF's trainers).
        optimizer = AdamW(groups: [
            .init(parameters: lora.adapters.flatMap { $0.1.parameters }, lr: recipe.training.learning_rate, weightDecay: decay),
            .init(parameters: lora.extras, lr: extrasLR, weightDecay: 0),
        ])
        data = try DataLoader(recipe.data.train, contextLength: recipe.model.context_length, vocabSize: model.config.vocabSize,
                              seed: recipe.training.seed)
        evalData = try recipe.data.eval.map {
            try DataLoader($0, contextLength: recipe.model.context_length, vocabSize: model.config.vocabSize, seed: 0, key: "data.eval")
        }
        if let resume { try restore(resume) }
    }

    /// Loads a checkpoint (a directory, or "latest" of this run) and checks it belongs to this recipe and model.
    func restore(_ spec: String) throws {
        let url = spec == "latest" ? runDir.appendingPathComponent("latest") : URL(fileURLWithPath: spec)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw EngineError("\(url.path): no checkpoint to resume from (run without --resume to start fresh)")
        }
        let ck = try Checkpoint.read(url)
        let s = ck.state
        guard s.modelConfig == modelConfig else {
            throw EngineError("\(ck.url.path): checkpoint was trained on a different model (config differs from \(recipe.model.path))")
        }
        let mine = recipe, theirs = s.recipe
        for (what, same) in [("model", mine.model == theirs.model), ("adapter", mine.adapter == theirs.adapter),
                             ("attention", mine.attention == theirs.attention), ("data.train", mine.data.train == theirs.data.train)] where !same {
            throw EngineError("\(ck.url.path): checkpoint comes from a recipe with a different \(what) section; resume with the recipe it was trained with")
        }
        let params = lora.trainableParameters
        guard params.map(\.0) == s.trainable else { throw EngineError("\(ck.url.path): trainable tensors differ from this recipe's") }
        var m: [String: Tensor] = [:], v: [String: Tensor] = [:]
        for (n, p) in params {
            let t = try ck.tensors.tensor(n)
            guard t.shape == p.shape else { throw EngineError("\(ck.url.path): \(n) has shape \(t.shape), expected \(p.shape)") }
            p.value = t
            m[n] = try ck.optimizer.tensor("m." + n); v[n] = try ck.optimizer.tensor("v." + n)
        }
        optimizer.restore(step: s.step, m: m, v: v)
        step = s.step
        data.seek(to: s.cursor)
        metrics = s.metrics
        log("resumed from \(ck.url.path) at step \(step)")
    }

    func saveCheckpoint() throws -> URL {
        let state = TrainerState(step: step, cursor: data.cursor, recipe: recipe, modelConfig: modelConfig,
                                 trainable: lora.trainableParameters.map(\.0), metrics: metrics,
                                 versions: ["longtune": LongTuneVersion.string, "format": "1"])
        return try Checkpoint.write(runDir: runDir, state: state, tensors: lora.trainableParameters.map { ($0.0, $0.1.value) },
                                    m: optimizer.m, v: optimizer.v, keep: recipe.checkpoints.keep)
    }

    /// Mean loss over the first `eval_sequences` evaluation sequences (full attention, no grad).
    public func evaluate() throws -> Double? {
        guard let evalData else { return nil }
        lora.eval()
        var total = 0.0
        let n = min(recipe.data.eval_sequences, evalData.count)
        for i in 0..<n {
            let s = try evalData.sequence(i)
            let ctx = try lora.base.context(length: s.ids.count, documentStarts: s.documentStarts)
            total += Double(lora.base.loss(Graph(recording: false), ids: s.ids, labels: s.labels, context: ctx).value[0])
        }
        return total / Double(n)
    }

    /// Trains to `training.steps`, checkpointing every `checkpoints.every` steps, at the end, and on SIGINT/SIGTERM.
    public func run(stopAfter: Int? = nil, progress: (String) -> Void = { _ in }) throws {
        let t = recipe.training
        let metricsURL = runDir.appendingPathComponent("metrics.jsonl")
        try Checkpoint.prepare(runDir: runDir)
        let start = Date(), startStep = step
        if step == 0, recipe.logging.eval_every > 0, let e = try evaluate() {
            // The baseline the fine-tune is measured against.
            metrics.append(["step": 0, "eval_loss": e])
            try Data((String(data: try JSONSerialization.data(withJSONObject: ["step": 0, "eval_loss": e], options: [.sortedKeys]),
                             encoding: .utf8)! + "\n").utf8).write(to: metricsURL)
            log(String(format: "eval loss before training: %.4f", e))
        }
        let perStep = t.batch_size * t.gradient_accumulation
        while step < t.steps {
            let t0 = Date()
            var lossSum = 0.0
            for micro in 0..<perStep {
                // A fresh dropout mask per sequence; a checkpointed layer's replay reuses it.
                lora.seedDropout(step: UInt64(step * perStep + micro), seed: t.seed)
                let s = try data.next()
                let loss = try TrainingStep.run(lora, ids: s.ids, labels: s.labels, documentStarts: s.documentStarts,
                                                attention: recipe.attentionMode, checkpointLayers: t.activation_checkpointing,
                                                lossScale: 1 / Float(perStep))
                guard loss.isFinite else {
                    throw EngineError("step \(step + 1): loss is \(loss); stopping. The last good checkpoint in \(runDir.path) is intact; lower training.learning_rate or set training.max_grad_norm and resume")
                }
                lossSum += Double(loss)
            }
            let norm = clipGradients(lora.trainableParameters, maxNorm: t.max_grad_norm)
            guard norm.isFinite else {
                throw EngineError("step \(step + 1): gradient norm is \(norm); stopping. The last good checkpoint in \(runDir.path) is intact")
            }
            let lr = t.learning_rate * recipe.lrScale(step: step)
            optimizer.update(lrScale: recipe.lrScale(step: step))
            step += 1
            let dt = Date().timeIntervalSince(t0), elapsed = Date().timeIntervalSince(start)
            let tokensPerSecond = Double(perStep * recipe.model.context_length) / dt
            let eta = elapsed / Double(step - startStep) * Double(t.steps - step)
            var record: [String: Double] = ["step": Double(step), "loss": lossSum / Double(perStep), "lr": lr, "grad_norm": norm,
                                            "tokens_per_second": tokensPerSecond, "elapsed": elapsed,
                                            "peak_rss_gib": Double(MemoryStats.processPeakRSS()) / 1_073_741_824]
            if recipe.logging.eval_every > 0, step % recipe.logging.eval_every == 0 || step == t.steps, let e = try evaluate() {
                record["eval_loss"] = e
            }
            metrics.append(record)
            let line = String(data: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), encoding: .utf8)! + "\n"
            if let fh = try? FileHandle(forWritingTo: metricsURL) { fh.seekToEndOfFile(); fh.write(Data(line.utf8)); try? fh.close() }
            else { try Data(line.utf8).write(to: metricsURL) }
            if step % recipe.logging.every == 0 || step == t.steps {
                var s = String(format: "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f tokens/s  elapsed %.0fs  ETA %.0fs  peak %.2f GiB",
                               step, t.steps, record["loss"]!, lr, norm, tokensPerSecond, elapsed, eta, record["peak_rss_gib"]!)
                if let e = record["eval_loss"] { s += String(format: "  eval loss %.4f", e) }
                progress(s)
            }
            let stopping = stopRequested || step == stopAfter
            if step % recipe.checkpoints.every == 0 || step == t.steps || stopping {
                let url = try saveCheckpoint()
                if stopping {
                    log("stopped at step \(step); checkpoint \(url.path). Resume with --resume.")
                    return
                }
            }
        }
    }
}

public enum LongTuneVersion { public static let string = "0.1.0" }
