import Engine
import Foundation

extension Trainer {
    /// What a run checks before anything heavy loads: the root rank makes and locks the run directory (a second run
    /// on it fails at once) and refuses a fresh run where checkpoints exist; then the memory plan must fit, for every
    /// rank on this machine (`training.memory_check: false` skips it). `source` names the recipe in messages; `log`
    /// gets the plan's summary line. Returns the lock, which `run` then holds.
    public static func prepareRun(_ r: Recipe, source: String, resuming: Bool, world: World,
                                  log: (String) -> Void) throws -> RunLock? {
        let runDir = URL(fileURLWithPath: r.checkpoints.dir)
        var lock: RunLock?
        if world.isRoot {
            try Checkpoint.prepare(runDir: runDir)
            lock = try RunLock(runDir: runDir)
            if !resuming, Checkpoint.newestComplete(runDir: runDir) != nil {
                throw LongTuneError("\(runDir.path) already holds checkpoints of a run; "
                                    + "pass --resume to continue it, or choose another checkpoints.dir")
            }
        }
        if r.training.memory_check { try checkMemory(r, source: source, world: world, log: log) }
        return lock
    }

    static func checkMemory(_ r: Recipe, source: String, world: World, log: (String) -> Void) throws {
        let plan = try Planner.plan(r, alternatives: false)
        guard plan.fits else { throw LongTuneError(Planner.refusal(try Planner.plan(r), recipe: source)) }
        let gib = { (bytes: Int) in Double(bytes) / 1_073_741_824 }
        // Ranks on one machine share its memory, each holding the whole model.
        guard plan.peakRSSBytes * world.localSize <= plan.availableBytes else {
            throw LongTuneError(String(format: "%@: %d ranks on this machine each need ~%.2f GiB (longtune plan), "
                                     + "%.1f GiB are available; start fewer ranks per machine (mpirun --map-by "
                                     + "ppr:1:node) or set training.memory_check: false", source, world.localSize,
                                     gib(plan.peakRSSBytes), gib(plan.availableBytes)))
        }
        log(String(format: "plan: peak ~%.2f GiB of %.1f GiB available, ~%.1f s per step (longtune plan %@)",
                   gib(plan.peakRSSBytes), gib(plan.availableBytes), plan.secondsPerStep, source))
    }

    /// The line a run starts with: model, context, attention, what trains and where.
    public func startLine(source: String) -> String {
        let r = recipe
        return "training \(source): \(r.model.path), \(r.model.context_length) tokens, "
            + "attention \(r.attention.mode.rawValue), \(lora.trainableParameters.count) trainable tensors"
            + (world.size > 1 ? ", \(world.size) MPI ranks × \(Parallel.threads) threads" : ", \(CPU.summary)")
            + (r.attention.sequence_parallel > 1 ? ", \(r.attention.sequence_parallel) ranks per sequence" : "")
    }
}
