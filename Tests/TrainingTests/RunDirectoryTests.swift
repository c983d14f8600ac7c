import Engine
import Formats
import Foundation
import TestSupport
import Training
import XCTest

/// A checkpoint directory belongs to one run; interrupted writes leave nothing that blocks a resume;
/// a diverged checkpoint is not merged.
final class RunDirectoryTests: XCTestCase {
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("rundir") }
    override func tearDown() { tmp.remove() }

    func recipe(_ extra: [String] = []) throws -> Recipe {
        try Recipe.load(TrainerTests.tinyRecipe, overrides: ["training.steps=6", "checkpoints.every=3", "checkpoints.keep=5",
                                                             "model.context_length=64", "logging.eval_every=0",
                                                             "checkpoints.dir=\(tmp.path("run").path)"] + extra)
    }

    func testSecondRunOnTheSameDirectoryFailsWithTheHolderPID() throws {
        try FileManager.default.createDirectory(at: tmp.path("run"), withIntermediateDirectories: true)
        let held = try RunLock(runDir: tmp.path("run"))
        let second = try Trainer(recipe: try recipe(), log: { _ in })
        expectError(["PID \(getpid())", "checkpoints.dir"]) { try second.run() }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("run/latest").path), "the second run wrote nothing")
        withExtendedLifetime(held) {}
        // The command line fails at once, before loading the model, with the holder's PID.
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("longtune")
        guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built next to the tests") }
        let p = Process(), err = Pipe()
        p.executableURL = exe
        p.arguments = ["train", TrainerTests.tinyRecipe.path, "--set", "checkpoints.dir=\(tmp.path("run").path)"]
        p.standardOutput = FileHandle.nullDevice; p.standardError = err
        try p.run(); p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("PID \(getpid())"))
    }

    /// The disk filling while metrics.jsonl is appended (a symlink to /dev/full, where every write fails with
    /// ENOSPC): the run stops with an error naming the file, no trap.
    func testAFullDiskDuringAMetricsAppendIsAClearError() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full here") }
        try FileManager.default.createDirectory(at: tmp.path("run"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: tmp.path("run/metrics.jsonl").path, withDestinationPath: "/dev/full")
        let trainer = try Trainer(recipe: try recipe(), log: { _ in })
        expectError(["metrics.jsonl", "disk full"]) { try trainer.run() }
    }

    func testResumeSurvivesAMissingOrDanglingLatestAndStaleTemporaries() throws {
        try Trainer(recipe: try recipe(), log: { _ in }).run()
        let run = tmp.path("run"), fm = FileManager.default
        try fm.createDirectory(at: run.appendingPathComponent(".step-000009.tmp-12345"), withIntermediateDirectories: true)
        try Data().write(to: run.appendingPathComponent(".latest.tmp-12345"))
        try fm.removeItem(at: run.appendingPathComponent("latest"))
        try fm.createSymbolicLink(atPath: run.appendingPathComponent("latest").path, withDestinationPath: "step-000099")
        var said: [String] = []
        let resumed = try Trainer(recipe: try recipe(["training.steps=9"]), resume: "latest", log: { said.append($0) })
        XCTAssertEqual(resumed.step, 6)
        XCTAssertTrue(said.contains { $0.contains("newest complete checkpoint, step-000006") }, "\(said)")
        try resumed.run()
        let left = try fm.contentsOfDirectory(atPath: run.path).filter { $0.contains(".tmp-") }
        XCTAssertEqual(left, [], "stale temporaries are removed")
        XCTAssertEqual(try Checkpoint.read(run.appendingPathComponent("latest")).state.step, 9)
    }

    func testMergeRefusesANonFiniteCheckpoint() throws {
        try Trainer(recipe: try recipe(), log: { _ in }).run()
        let ck = tmp.path("run/step-000006")
        let adapter = try SafetensorsFile(ck.appendingPathComponent("adapter.safetensors"))
        let tensors = try adapter.names.map { ($0, try adapter.tensor($0)) }
        let poisoned = tensors[1].0
        tensors[1].1.data[3] = .nan
        try SafetensorsFile.write(tensors, dtype: .fp32, to: ck.appendingPathComponent("adapter.safetensors"))
        expectError([poisoned, "nan", "earlier checkpoint"]) {
            _ = try Merge.run(checkpoint: ck, out: self.tmp.path("merged"), dtype: .fp16)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("merged").path))
    }
}
