import Adapters
import Datasets
import Engine
import Foundation
import Llama
import Settings
import TestSupport
import Training
import XCTest

/// What the trainer reports: evaluation loss measured as training loss is, one metrics record per step.
final class TrainerRecordsTests: XCTestCase {
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("records") }
    override func tearDown() { tmp.remove() }

    func tinyRecipe(_ extra: [String]) throws -> Recipe {
        try Recipe.load(TrainerTests.tinyRecipe, overrides: ["model.context_length=64", "logging.eval_every=0",
                                                             "checkpoints.dir=\(tmp.path("run").path)"] + extra)
    }

    /// Packed documents: the evaluation loss of a sequence equals the training step's loss on it
    /// (same targets, first tokens of documents not predicted from the previous document).
    func testEvalLossEqualsTrainingLossOnPackedData() throws {
        let file = tmp.path("packed.h5")
        let writer = try PackedWriter(url: file, seqLen: 64)
        var rng = SplitMix64(seed: 9)
        let ids = (0..<64).map { _ in Int32(rng.next() % 256) }
        try writer.append(ids: ids, documents: (0..<64).map { Int32($0 < 20 ? 0 : $0 < 45 ? 1 : 2) })
        try writer.finish(attributes: [:], integers: ["seq_len": 64])
        let trainer = try Trainer(recipe: try tinyRecipe(["data.train=\(file.path)", "data.eval=\(file.path)",
                                                          "data.eval_sequences=1", "attention.mode=full"]), log: { _ in })
        let s = try DataLoader(file.path, contextLength: 64, vocabSize: 256, shuffleSeed: nil).sequence(0)
        XCTAssertEqual(s.documentStarts, [0, 20, 45])
        let eval = try XCTUnwrap(try trainer.evaluate())
        let train = try TrainingStep.run(trainer.lora, ids: s.ids, labels: s.labels, documentStarts: s.documentStarts,
                                         attention: .full, checkpointLayers: false)
        XCTAssertEqual(eval, Double(train), accuracy: 1e-6)
        // The document masking matters here: without it the loss differs.
        let unmasked = try TrainingStep.run(trainer.lora, ids: s.ids, attention: .full, checkpointLayers: false)
        XCTAssertGreaterThan(abs(Double(unmasked) - eval), 1e-4)
    }

    func metricsSteps(_ dir: String) throws -> [(step: Int, loss: Double)] {
        let text = try String(contentsOf: tmp.path(dir).appendingPathComponent("metrics.jsonl"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let r = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return ((r["step"] as! NSNumber).intValue, (r["loss"] as? NSNumber)?.doubleValue ?? .nan)
        }
    }

    /// A crash after step 6 and a resume from step 3's checkpoint: metrics.jsonl ends with one record
    /// per step (the repeated steps replace the old ones, a torn last line is dropped), equal to a
    /// straight run's.
    func testResumeKeepsOneMetricsRecordPerStep() throws {
        let options = ["training.steps=6", "checkpoints.every=3", "checkpoints.keep=5"]
        try Trainer(recipe: try tinyRecipe(options), log: { _ in }).run()
        let straight = try metricsSteps("run")
        XCTAssertEqual(straight.map(\.step), [1, 2, 3, 4, 5, 6])
        let metrics = tmp.path("run/metrics.jsonl")
        let handle = try FileHandle(forWritingTo: metrics)
        handle.seekToEndOfFile()
        handle.write(Data(#"{"loss": 1.5, "st"#.utf8))   // a crash mid-append
        try handle.close()
        let resumed = try Trainer(recipe: try tinyRecipe(options), resume: tmp.path("run/step-000003").path, log: { _ in })
        try resumed.run()
        let after = try metricsSteps("run")
        XCTAssertEqual(after.map(\.step), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(after.map(\.loss), straight.map(\.loss))
    }
}

/// The recipe schema comes from the documented knob declarations.
final class RecipeSchemaTests: XCTestCase {
    func testEveryKnobHasAMeaningAndIsExplained() throws {
        let text = Recipe.explain()
        var count = 0
        for section in Mirror(reflecting: Recipe()).children {
            let knobs = type(of: section.value as! any KnobSection).knobs
            XCTAssertFalse(knobs.isEmpty, section.label!)
            for (key, knob) in knobs {
                XCTAssertGreaterThan(knob.meaning.count, 10, "\(section.label!).\(key) needs a meaning")
                XCTAssertTrue(text.contains("\(section.label!).\(key): "), "explain lists \(section.label!).\(key)")
                count += 1
            }
        }
        XCTAssertGreaterThanOrEqual(count, 30)
    }

    func testMissingKeysTakeTheDeclaredDefaults() throws {
        let tmp = try TemporaryDirectory("schema")
        defer { tmp.remove() }
        let url = tmp.path("minimal.yaml")
        try """
        model: {path: builtin:tiny, context_length: 64}
        data: {train: builtin:chain}
        training: {steps: 3}
        checkpoints: {dir: run}
        """.write(to: url, atomically: true, encoding: .utf8)
        var expected = Recipe()
        expected.model.path = "builtin:tiny"; expected.model.context_length = 64
        expected.data.train = "builtin:chain"; expected.training.steps = 3; expected.checkpoints.dir = "run"
        XCTAssertEqual(try Recipe.load(url), expected)
        XCTAssertEqual(expected.training.schedule, .cosine)
        XCTAssertEqual(expected.adapter.targets, [.q_proj, .k_proj, .v_proj, .o_proj])
        // A required key left out is named.
        try "model: {path: builtin:tiny}\ndata: {train: x}\ntraining: {steps: 1}\ncheckpoints: {dir: d}\n"
            .write(to: url, atomically: true, encoding: .utf8)
        expectError(["model.context_length"]) { _ = try Recipe.load(url) }
    }

    func testClosedSetsNameTheirChoices() throws {
        expectError(["training.schedule", "constant | linear | cosine"]) {
            _ = try Recipe.load(TrainerTests.tinyRecipe, overrides: ["training.schedule=cosin"])
        }
        expectError(["adapter.targets", "q_proj | k_proj"]) {
            _ = try Recipe.load(TrainerTests.tinyRecipe, overrides: ["adapter.targets=[q_proj, qkv]"])
        }
        expectError(["training.max_grad_norm", "unset"]) {
            _ = try Recipe.load(TrainerTests.tinyRecipe, overrides: ["training.max_grad_norm=-1"])
        }
    }

    func testTransformersWarmupSchedule() {
        // get_cosine_schedule_with_warmup(warmup 3, 10 steps): 0, 1/3, 2/3, then cosine from 1.
        let f = (0..<10).map { Schedule.cosine.factor(step: $0, warmup: 3, total: 10) }
        XCTAssertEqual(f[0], 0); XCTAssertEqual(f[1], 1.0 / 3, accuracy: 1e-15); XCTAssertEqual(f[3], 1)
        XCTAssertEqual(f[5], 0.5 * (1 + cos(.pi * 2 / 7)), accuracy: 1e-15)
        XCTAssertEqual(Schedule.linear.factor(step: 9, warmup: 0, total: 10), 0.1, accuracy: 1e-15)
    }
}
