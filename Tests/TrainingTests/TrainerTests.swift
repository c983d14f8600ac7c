import Adapters
import Engine
import Foundation
import Training
import Llama
import TestSupport
import XCTest

/// The trainer's promises: exact resume, surviving a kill mid-checkpoint, clear errors on bad input.
final class TrainerTests: XCTestCase {
    static let repo = repositoryRoot
    static let tinyRecipe = repo.appendingPathComponent("recipes/tiny.yaml")
    static let datasets = repo.appendingPathComponent("Tests/LlamaTests/Fixtures/datasets")
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("trainer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

    func recipe(_ extra: [String] = [], dir: String = "run") throws -> Recipe {
        try Recipe.load(Self.tinyRecipe, overrides: ["training.steps=6", "checkpoints.every=3", "checkpoints.keep=5",
                                                     "model.context_length=64", "logging.eval_every=0",
                                                     "checkpoints.dir=\(tmp.appendingPathComponent(dir).path)", "adapter.dropout=0.1"] + extra)
    }

    func testStraightRunEqualsHalfResumeHalfBitwise() throws {
        let straight = try Trainer(recipe: try recipe(dir: "a"), log: { _ in })
        try straight.run()
        let half = try Trainer(recipe: try recipe(dir: "b"), resume: tmp.appendingPathComponent("a/step-000003").path, log: { _ in })
        XCTAssertEqual(half.step, 3)
        try half.run()
        let a = try Checkpoint.read(tmp.appendingPathComponent("a/latest")), b = try Checkpoint.read(tmp.appendingPathComponent("b/latest"))
        XCTAssertEqual(a.state.step, 6); XCTAssertEqual(b.state.step, 6)
        XCTAssertEqual(a.state.cursor, b.state.cursor)
        for name in a.tensors.names {
            XCTAssertEqual(try a.tensors.tensor(name).array, try b.tensors.tensor(name).array, "\(name) differs after resume")
        }
        for name in a.optimizer.names {
            XCTAssertEqual(try a.optimizer.tensor(name).array, try b.optimizer.tensor(name).array, "optimizer \(name) differs after resume")
        }
        // And training changed something: the adapters moved away from zero.
        XCTAssertNotEqual(try a.tensors.tensor("model.layers.0.self_attn.q_proj.lora_B.weight").array.max(), 0)
    }

    func testKilledDuringCheckpointLeavesPreviousCheckpointResumable() throws {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("longtune")
        guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built next to the tests") }
        let dir = tmp.appendingPathComponent("killed").path
        let args = ["train", Self.tinyRecipe.path, "--set", "training.steps=6", "--set", "checkpoints.every=3",
                    "--set", "model.context_length=64", "--set", "checkpoints.dir=\(dir)", "--set", "logging.eval_every=0"]
        let p = Process()
        p.executableURL = exe; p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(["LONGTUNE_TEST_KILL_DURING_CHECKPOINT": "6"]) { $1 }
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run(); p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        XCTAssertEqual(p.terminationStatus, SIGKILL)
        // latest still names the complete step-3 checkpoint; no step-6 directory exists.
        let latest = try Checkpoint.read(URL(fileURLWithPath: dir).appendingPathComponent("latest"))
        XCTAssertEqual(latest.state.step, 3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/step-000006"))
        let resume = Process()
        resume.executableURL = exe; resume.arguments = args + ["--resume"]
        resume.standardOutput = FileHandle.nullDevice; resume.standardError = FileHandle.nullDevice
        try resume.run(); resume.waitUntilExit()
        XCTAssertEqual(resume.terminationStatus, 0)
        XCTAssertEqual(try Checkpoint.read(URL(fileURLWithPath: dir).appendingPathComponent("latest")).state.step, 6)
    }

    func writeRecipe(_ text: String) throws -> URL {
        let url = tmp.appendingPathComponent("r-\(UUID().uuidString).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func testBadRecipes() throws {
        let base = try String(contentsOf: Self.tinyRecipe, encoding: .utf8)
        let malformed = try writeRecipe("model: [unclosed\n  path: x")
        expectError([malformed.path, "malformed YAML"]) { _ = try Recipe.load(malformed) }
        let typo = try writeRecipe(base.replacingOccurrences(of: "learning_rate:", with: "learnig_rate:"))
        expectError([typo.path, "training.learnig_rate", "did you mean \"training.learning_rate\""]) { _ = try Recipe.load(typo) }
        let wrongType = try writeRecipe(base.replacingOccurrences(of: "steps: 40", with: "steps: forty"))
        expectError([wrongType.path, "training.steps"]) { _ = try Recipe.load(wrongType) }
        expectError(["attention.group_ratio"]) { _ = try recipe(["model.context_length=100"]) }
        expectError(["--set training.steps"]) { _ = try recipe(["training.steps"]) }
        expectError(["model.compute_dtype", "\"fp16\" is not one of fp32 | bf16"]) {
            _ = try recipe(["model.compute_dtype=fp16"])
        }
    }

    /// attention.sequence_parallel (docs/CONVENTIONS.md §17): S2 with boundaries, whole groups per rank, and a
    /// world of a multiple of it.
    func testBadSequenceParallelSettings() throws {
        expectError(["attention.sequence_parallel", "need S2-Attn"]) {
            _ = try recipe(["attention.sequence_parallel=2", "attention.mode=full"])
        }
        expectError(["attention.sequence_parallel", "shift: boundaries"]) {
            _ = try recipe(["attention.sequence_parallel=2", "attention.shift=roll"])
        }
        expectError(["attention.sequence_parallel", "cannot share 4 S2 groups", "choose a divisor of 4"]) {
            _ = try recipe(["attention.sequence_parallel=3"])
        }
        expectError(["attention.sequence_parallel", "must be 1 or more"]) {
            _ = try recipe(["attention.sequence_parallel=0"])
        }
        expectError(["attention.sequence_parallel is 2", "mpirun -np N, N a multiple of 2"]) {
            _ = try Trainer(recipe: try recipe(["attention.sequence_parallel=2"]), log: { _ in })
        }
    }

    func testMissingModelAndDataFiles() throws {
        expectError(["/nonexistent/model", "no such model directory"]) {
            _ = try Trainer(recipe: try recipe(["model.path=/nonexistent/model"]), log: { _ in })
        }
        expectError(["/nonexistent/data.h5", "no such dataset"]) {
            _ = try Trainer(recipe: try recipe(["data.train=/nonexistent/data.h5"]), log: { _ in })
        }
    }

    func testDatasetRowLengthMismatchAndOutOfVocabToken() throws {
        let rows = Self.datasets.appendingPathComponent("rows_int64.h5").path   // rows of 10 tokens
        expectError([rows, "rows hold 10 tokens", "model.context_length is 64"]) {
            _ = try Trainer(recipe: try recipe(["data.train=\(rows)"]), log: { _ in })
        }
        let oov = Self.datasets.appendingPathComponent("out_of_vocab.h5").path   // rows of 6, id 500 ≥ 256
        let t = try Trainer(recipe: try recipe(["data.train=\(oov)", "model.context_length=6", "attention.mode=full",
                                                "training.batch_size=2"]), log: { _ in })
        expectError([oov, "row 1, column 4", "500"]) { try t.run() }
    }

    func testResumeRefusesAnotherRecipeOrModel() throws {
        try Trainer(recipe: try recipe(dir: "a"), log: { _ in }).run()
        let ck = tmp.appendingPathComponent("a/latest").path
        expectError(["different adapter"]) { _ = try Trainer(recipe: try recipe(["adapter.rank=4"], dir: "b"), resume: ck, log: { _ in }) }
        expectError(["different model"]) {
            _ = try Trainer(recipe: try recipe(["model.rope_scaling={rope_type: linear, factor: 4.0}"], dir: "c"), resume: ck, log: { _ in })
        }
    }

    func testCheckpointDirectoryThatCannotBeCreated() throws {
        let blocker = tmp.appendingPathComponent("blocker")
        try Data("a file, not a directory".utf8).write(to: blocker)
        let t = try Trainer(recipe: try recipe(["checkpoints.dir=\(blocker.appendingPathComponent("run").path)"]), log: { _ in })
        expectError([blocker.path, "cannot create the checkpoint directory", "checkpoints.dir"]) { try t.run() }
    }

    func testUnwritableCheckpointDirectory() throws {
        // The kernel refuses new directories under /proc, for root too (CI runs as root).
        let t = try Trainer(recipe: try recipe(["checkpoints.dir=/proc/longtune-test-run"]), log: { _ in })
        expectError(["/proc/longtune-test-run", "checkpoints.dir"]) { try t.run() }
    }

    func testNaNLossStopsAndKeepsLastCheckpoint() throws {
        let t = try Trainer(recipe: try recipe(dir: "nan"), log: { _ in })
        try t.run()  // 6 steps, checkpoints at 3 and 6
        let again = try Trainer(recipe: try recipe(["training.steps=9"], dir: "nan"), resume: "latest", log: { _ in })
        // Poison a trainable tensor: the next step's loss is NaN.
        again.lora.trainableParameters[0].1.value.fill(.nan)
        expectError(["is nan", "intact"]) { try again.run() }
        XCTAssertEqual(try Checkpoint.read(tmp.appendingPathComponent("nan/latest")).state.step, 6)
    }
}

/// Every shipped recipe parses and validates (a typo in a recipe fails CI, not a user's run).
final class ShippedRecipeTests: XCTestCase {
    func testAllRecipesLoad() throws {
        let dir = TrainerTests.repo.appendingPathComponent("recipes")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(files.count, 4)
        for f in files {
            let url = dir.appendingPathComponent(f)
            XCTAssertNoThrow(try Recipe.load(url), f)
            let first = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").first.map(String.init)
            XCTAssertEqual(first, "# longtune train recipes/\(f)", "\(f): the first line must be the command that runs it")
        }
    }
}

final class DropoutReplayTests: XCTestCase {
    /// LoRA dropout under activation checkpointing: the replayed layer draws the same mask, so the
    /// gradients equal those of the uncheckpointed step; and dropout does change them.
    func testCheckpointReplayUsesTheSameDropoutMask() throws {
        func grads(dropout: Double, checkpoint: Bool, mlpSlice: Int? = nil) throws -> [Float] {
            let model = try BuiltinModels.make("tiny", seed: 3)
            if let mlpSlice { for layer in model.model.layers { layer.mlp.rowsPerSlice = mlpSlice } }
            var cfg = LoRAConfig(); cfg.dropout = dropout
            cfg.targets = model.projectionTargets
            let lora = try LoRAModel(model, config: cfg, seed: 4)
            for (_, a) in lora.adapters { for i in 0..<a.lora_B.value.count { a.lora_B.value.data[i] = 0.01 * Float(i % 7) } }
            lora.seedDropout(step: 5, seed: 6)
            let ids = (0..<32).map { Int32(($0 * 11) % 256) }
            try TrainingStep.run(lora, ids: ids, checkpointLayers: checkpoint)
            return lora.trainableParameters.flatMap { $0.1.grad?.array ?? [] }
        }
        let plain = try grads(dropout: 0.3, checkpoint: false), replayed = try grads(dropout: 0.3, checkpoint: true)
        XCTAssertEqual(plain.count, replayed.count)
        var worst: Float = 0
        for (a, b) in zip(plain, replayed) { worst = max(worst, abs(a - b)) }
        XCTAssertLessThan(worst, 1e-6)
        // The MLP replayed in slices of 5 rows (the last one 2): each slice draws its rows of the same mask.
        let sliced = try grads(dropout: 0.3, checkpoint: true, mlpSlice: 5)
        XCTAssertEqual(sliced.count, plain.count)
        XCTAssertLessThan(zip(plain, sliced).map { abs($0 - $1) }.max()!, 1e-6)
        let noDropout = try grads(dropout: 0, checkpoint: true)
        XCTAssertGreaterThan(zip(noDropout, replayed).map { abs($0 - $1) }.max()!, 1e-4)
    }
}
