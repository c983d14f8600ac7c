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
            throw LongTuneError("--stop-after: a step number of at least 1, got \(stopAfter) (omit it to run every "
                                + "step)")
        }
        let r = try Recipe.load(URL(fileURLWithPath: recipe), overrides: overrides)
        signal(SIGINT) { _ in if stopRequested { _exit(130) }; stopRequested = true }
        signal(SIGTERM) { _ in stopRequested = true }
        let say: (String) -> Void = world.isRoot ? { print($0) } : { _ in }
        let resuming = resumeFrom ?? (resume ? "latest" : nil)
        let lock = try Trainer.prepareRun(r, source: recipe, resuming: resuming != nil, world: world, log: say)
        let trainer = try Trainer(recipe: r, resume: resuming, log: say, checkpointHook: Self.testKillHook)
        say(trainer.startLine(source: recipe))
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
