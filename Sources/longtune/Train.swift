import ArgumentParser
import Engine
import Foundation
import Training

/// `longtune train RECIPE`: LongLoRA training from a YAML recipe, resumable.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train from a YAML recipe; Ctrl-C writes a checkpoint, --resume continues exactly.")

    @Argument(help: "The recipe (recipes/*.yaml).") var recipe: String
    @Option(name: .customLong("set"), help: "Override a recipe value, e.g. --set training.steps=100 (repeatable).")
    var overrides: [String] = []
    @Flag(help: "Continue from the run's latest checkpoint.") var resume = false
    @Option(help: "Continue from this checkpoint directory.") var resumeFrom: String?
    @Option(help: "Stop (with a checkpoint) after this step, as an interruption would.") var stopAfter: Int?

    func run() throws {
        let world = World.shared
        guard world.size > 1 else { return try train(world) }
        // Under mpirun an error on one rank must end them all, at once (docs/CONVENTIONS.md §16).
        do { try train(world) } catch { world.abort("\(error)") }
    }

    func train(_ world: World) throws {
        if let stopAfter, stopAfter < 1 {
            throw EngineError("--stop-after: a step number of at least 1, got \(stopAfter) (omit it to run every step)")
        }
        let r = try Recipe.load(URL(fileURLWithPath: recipe), overrides: overrides)
        signal(SIGINT) { _ in if stopRequested { _exit(130) }; stopRequested = true }
        signal(SIGTERM) { _ in stopRequested = true }
        // The run directory is this process's before anything heavy loads: a second run fails at once.
        let runDir = URL(fileURLWithPath: r.checkpoints.dir)
        var lock: RunLock?
        if world.isRoot {
            try Checkpoint.prepare(runDir: runDir)
            lock = try RunLock(runDir: runDir)
            if !resume && resumeFrom == nil, Checkpoint.newestComplete(runDir: runDir) != nil {
                throw EngineError("\(runDir.path) already holds checkpoints of a run; "
                                  + "pass --resume to continue it, or choose another checkpoints.dir")
            }
        }
        let say: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        if r.training.memory_check {
            let plan = try Planner.plan(r, alternatives: false)
            guard plan.fits else { throw EngineError(Planner.refusal(try Planner.plan(r), recipe: recipe)) }
            // Ranks on one machine share its memory, each holding the whole model.
            guard plan.peakRSSBytes * world.localSize <= plan.availableBytes else {
                throw EngineError(String(format: "%@: %d ranks on this machine each need ~%.2f GiB (longtune plan), "
                                         + "%.1f GiB are available; start fewer ranks per machine (mpirun --map-by "
                                         + "ppr:1:node) or set training.memory_check: false", recipe, world.localSize,
                                         Double(plan.peakRSSBytes) / 1_073_741_824,
                                         Double(plan.availableBytes) / 1_073_741_824))
            }
            say(String(format: "plan: peak ~%.2f GiB of %.1f GiB available, ~%.1f s per step (longtune plan %@)",
                       Double(plan.peakRSSBytes) / 1_073_741_824, Double(plan.availableBytes) / 1_073_741_824,
                       plan.secondsPerStep, recipe))
        }
        let trainer = try Trainer(recipe: r, resume: resumeFrom ?? (resume ? "latest" : nil), log: say,
                                  checkpointHook: Self.testKillHook)
        say("training \(recipe): \(r.model.path), \(r.model.context_length) tokens, "
            + "attention \(r.attention.mode.rawValue), \(trainer.lora.trainableParameters.count) trainable tensors"
            + (world.size > 1 ? ", \(world.size) MPI ranks × \(Parallel.threads) threads" : ", \(CPU.summary)")
            + (r.attention.sequence_parallel > 1 ? ", \(r.attention.sequence_parallel) ranks per sequence" : ""))
        try trainer.run(stopAfter: stopAfter, lock: lock) { Progress.line($0) }
        Progress.done()
        if trainer.step >= r.training.steps {
            say("done: \(trainer.step) steps; checkpoint \(trainer.runDir.appendingPathComponent("latest").path)")
        }
    }

    /// For the crash-safety test: LONGTUNE_TEST_KILL_DURING_CHECKPOINT=N dies by SIGKILL halfway
    /// through writing step N's checkpoint.
    static func testKillHook(step: Int) {
        if ProcessInfo.processInfo.environment["LONGTUNE_TEST_KILL_DURING_CHECKPOINT"] == String(step) {
            kill(getpid(), SIGKILL)
        }
    }
}
