import Engine
import Foundation
import Training
import TestSupport
import XCTest

/// Data-parallel training under `mpirun -np 2` (docs/CONVENTIONS.md §16) against the single-process run of the
/// same recipe: the same tensors within 1e-6 relative, resumable across world sizes, and a rank that dies ends the
/// run at once with the last checkpoint intact. CI installs Open MPI (scripts/install-system-deps.sh).
final class MPITrainingTests: XCTestCase {
    var dir: TemporaryDirectory!
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("longtune")

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built") }
        guard Self.mpirun != nil else { throw XCTSkip("no mpirun (apt-get install openmpi-bin libopenmpi-dev)") }
        dir = try TemporaryDirectory("mpi")
    }
    override func tearDown() { dir?.remove() }

    static let mpirun: String? = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    /// 10 steps, 4 sequences per step (batch 2 × accumulation 2: two per rank), dropout on, S2-Attn.
    let settings = ["training.steps=10", "training.gradient_accumulation=2", "model.context_length=64",
                    "logging.eval_every=0", "checkpoints.every=5", "adapter.dropout=0.1"]

    /// Runs `longtune train` on `ranks` processes (1: no mpirun); returns the exit status and the output.
    @discardableResult
    func train(ranks: Int, _ run: String, _ extra: [String] = [], environment: [String: String] = [:])
        throws -> (status: Int32, output: String) {
        let p = Process(), out = Pipe()
        let args = ["train", TrainerTests.tinyRecipe.path] + (settings + ["checkpoints.dir=\(dir.path(run).path)"])
            .flatMap { ["--set", $0] } + extra
        if ranks == 1 {
            p.executableURL = exe
            p.arguments = args
        } else {
            p.executableURL = URL(fileURLWithPath: Self.mpirun!)
            p.arguments = ["-np", "\(ranks)", "--oversubscribe"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
                + [exe.path] + args
        }
        // Containers often forbid the cross-memory attach Open MPI's shared-memory transport tries first.
        let mpi = ["OMPI_MCA_btl_vader_single_copy_mechanism": "none"]
        p.environment = ProcessInfo.processInfo.environment.merging(mpi.merging(environment) { $1 }) { $1 }
        p.standardOutput = out; p.standardError = out
        try p.run()
        let output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, output)
    }

    /// Every tensor of two runs' latest checkpoints (adapters and AdamW moments) within 1e-6 relative.
    func assertSameCheckpoint(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try Checkpoint.read(dir.path(a).appendingPathComponent("latest"))
        let y = try Checkpoint.read(dir.path(b).appendingPathComponent("latest"))
        XCTAssertEqual(x.state.step, y.state.step, file: file, line: line)
        XCTAssertEqual(x.state.cursor, y.state.cursor, file: file, line: line)
        for (mine, theirs) in [(x.tensors, y.tensors), (x.optimizer, y.optimizer)] {
            XCTAssertEqual(mine.names, theirs.names, file: file, line: line)
            for name in mine.names {
                let difference = relativeDifference(try theirs.tensor(name).array, try mine.tensor(name).array)
                XCTAssertLessThanOrEqual(difference, 1e-6, "\(a) vs \(b): \(name)", file: file, line: line)
            }
        }
    }

    func testTwoRanksTrainAsOneProcess() throws {
        let single = try train(ranks: 1, "single"), two = try train(ranks: 2, "two")
        XCTAssertEqual(single.status, 0, single.output)
        XCTAssertEqual(two.status, 0, two.output)
        XCTAssertTrue(two.output.contains("2 MPI ranks"), two.output)
        XCTAssertEqual(two.output.components(separatedBy: "step 10/10").count, 2, "one progress line per step, rank 0's")
        try assertSameCheckpoint("single", "two")
        // The adapters moved: the comparison is not between two untrained models.
        let trained = try Checkpoint.read(dir.path("two").appendingPathComponent("latest"))
        XCTAssertNotEqual(try trained.tensors.tensor("model.layers.0.self_attn.q_proj.lora_B.weight").array.max(), 0)
    }

    func testResumeAcrossWorldSizes() throws {
        try train(ranks: 1, "straight")
        // Two ranks stop at step 5, one process finishes; and the other way round.
        XCTAssertEqual(try train(ranks: 2, "a", ["--stop-after", "5"]).status, 0)
        XCTAssertEqual(try train(ranks: 1, "a", ["--resume"]).status, 0)
        XCTAssertEqual(try train(ranks: 1, "b", ["--stop-after", "5"]).status, 0)
        XCTAssertEqual(try train(ranks: 2, "b", ["--resume"]).status, 0)
        try assertSameCheckpoint("straight", "a")
        try assertSameCheckpoint("straight", "b")
    }

    /// Rank 0 killed halfway through writing step 10's checkpoint: mpirun ends rank 1 too (no hang), and step 5's
    /// checkpoint is the run's latest, intact and resumable.
    func testADeadRankEndsTheRunWithTheLastCheckpointIntact() throws {
        let start = Date()
        let killed = try train(ranks: 2, "killed", environment: ["LONGTUNE_TEST_KILL_DURING_CHECKPOINT": "10"])
        XCTAssertNotEqual(killed.status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 60)
        let latest = try Checkpoint.read(dir.path("killed").appendingPathComponent("latest"))
        XCTAssertEqual(latest.state.step, 5)
        XCTAssertEqual(try train(ranks: 2, "killed", ["--resume"]).status, 0)
        try train(ranks: 1, "straight")
        try assertSameCheckpoint("straight", "killed")
    }
}
