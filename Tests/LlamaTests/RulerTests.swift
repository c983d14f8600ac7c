import Datasets
import Engine
@testable import Evaluation
import Formats
import Foundation
import Llama
import TestSupport
import XCTest

/// `eval ruler` against RULER itself: the generators' prompts and answers equal what RULER's scripts wrote for the same
/// seed and tokenizer (Tools/reference/make_ruler_fixtures.py), the scoring equals RULER's on hand-made predictions,
/// and the random numbers equal CPython's.
final class RulerTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/ruler")
    static let smolLM2 = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DatasetsTests/Fixtures/sft/smollm2")

    /// Values printed by CPython 3.11 (`random.Random(seed)`), the snippet beside each.
    func testPythonRandomDrawsAsCPython() {
        var r = PythonRandom(seed: 42)
        XCTAssertEqual(r.random(), 0.6394267984578837)                 // r.random()
        XCTAssertEqual(r.randint(1_000_000, 9_999_999), 1_419_610)     // r.randint(1000000, 9999999)
        XCTAssertEqual(r.bits(70), [3_184_935_163, 1_181_241_943, 15]) // r.getrandbits(70), low word first
        var u = PythonRandom(seed: 7)
        XCTAssertEqual(uuid4(u.bits(128)), "6513270e-269e-4d37-b2a7-4de452e6b438")  // uuid.UUID(int=…, version=4)
        var c = PythonRandom(seed: 3)
        XCTAssertEqual(c.choices(RulerGenerator.uppercase, k: 8).joined(), "GOJPQBAV")
        XCTAssertEqual(c.sampleIndices(4, 2), [2, 3])                  // the pool method
        XCTAssertEqual(c.sampleIndices(100, 3), [29, 24, 91])          // the set method
        XCTAssertEqual(Array(c.sampleIndices(9000, 40).prefix(6)), [7704, 8863, 7804, 6506, 2467, 3799])
        var s = PythonRandom(seed: 5), x = Array(0..<10)
        s.shuffle(&x)
        XCTAssertEqual(x, [2, 3, 1, 0, 8, 7, 6, 5, 4, 9])
        var big = PythonRandom(seed: 1 << 40 + 5)                      // a two-word seed
        XCTAssertEqual(big.randint(0, 1 << 40), 64_105_765_088)
        var zero = PythonRandom(seed: 0)
        XCTAssertEqual(zero.below(6_171_620), 3_231_671)               // r.randrange(6171620)
        var numpy = NumpyLegacyRandom(seed: 42)                        // np.random.seed(42)
        XCTAssertEqual([numpy.randint(10000, 99999), numpy.randint(10000, 99999)], [25795, 10860])
    }

    func testWordPoolsAreRULERs() {
        XCTAssertEqual(RulerWords.adjectiveNouns.count, 6_171_620)     // len(sorted(set(adj-noun)))
        XCTAssertEqual(RulerWords.commonWordPool.count, 8166)
        var previous = RulerWords.adjectiveNouns[0]
        for i in stride(from: 1, to: RulerWords.adjectiveNouns.count, by: 997) {
            let w = RulerWords.adjectiveNouns[i]
            XCTAssertTrue(previous.utf8.lexicographicallyPrecedes(w.utf8), "\(previous) before \(w)")
            previous = w
        }
        XCTAssertEqual(SentenceSplitter.sentences("He said \"Go.\" Then (A.) it 1. x? no. 2 ok"),
                       ["He said \"Go.\"", "Then (A.) it 1. x? no.", "2 ok"])
    }

    struct Case: Decodable {
        let task: String, max_seq_length: Int, template: String, model_template: String, num_samples: Int
        let seed: UInt64, file: String
    }

    /// Every committed case: prompt, answer prefix, answers and length equal RULER's, sample by sample.
    func testGeneratorsEqualRULERsScripts() throws {
        let tokenizer = try Tokenizer(path: Self.smolLM2.path)
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("cases.json")))
        XCTAssertGreaterThanOrEqual(cases.count, 22)
        for c in cases {
            let task = try XCTUnwrap(RulerTask(rawValue: c.task))
            let expected = try String(contentsOf: Self.fixtures.appendingPathComponent(c.file), encoding: .utf8)
                .split(separator: "\n").map { try JSONDecoder().decode(RulerSample.self, from: Data($0.utf8)) }
            var generator = RulerGenerator(task: task, maxLength: c.max_seq_length, seed: c.seed,
                                           wrapper: c.model_template) { tokenizer.encode($0).count }
            let got = try generator.samples(c.num_samples)
            XCTAssertEqual(got.count, expected.count, c.file)
            for (i, (g, e)) in zip(got, expected).enumerated() {
                let what = "\(c.file) sample \(i)"
                XCTAssertEqual(g.outputs, e.outputs, what)
                XCTAssertEqual(g.answerPrefix, e.answerPrefix, what)
                XCTAssertEqual(g.length, e.length, what)
                if g.input != e.input {
                    let at = zip(g.input, e.input).prefix { $0 == $1 }.count
                    XCTFail("\(what): input differs at character \(at) of \(e.input.count): "
                            + "\(g.input.dropFirst(max(0, at - 40)).prefix(80)) vs \(e.input.dropFirst(max(0, at - 40)).prefix(80))")
                }
            }
        }
    }

    struct Scoring: Decodable {
        struct Sample: Decodable { let raw: String, pred: String, refs: [String], string_match_all: Double,
                                   string_match_part: Double }
        struct Batch: Decodable { let samples: [Int], string_match_all: Double, string_match_part: Double }
        let samples: [Sample]
        let batches: [Batch]
    }

    func testScoringEqualsRULERs() throws {
        let s = try JSONDecoder().decode(Scoring.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("scoring.json")))
        for (i, sample) in s.samples.enumerated() {
            let cleaned = RulerScoring.clean(sample.raw)
            XCTAssertEqual(Array(cleaned.unicodeScalars), Array(sample.pred.unicodeScalars), "sample \(i)")
            XCTAssertEqual(RulerScoring.taskScore([RulerScoring.matchAll(cleaned, sample.refs)]), sample.string_match_all,
                           "sample \(i): \(sample.pred) \(sample.refs)")
            XCTAssertEqual(RulerScoring.taskScore([RulerScoring.matchPart(cleaned, sample.refs)]), sample.string_match_part,
                           "sample \(i): \(sample.pred) \(sample.refs)")
        }
        for b in s.batches {
            let cleaned = b.samples.map { RulerScoring.clean(s.samples[$0].raw) }
            let all = zip(cleaned, b.samples).map { RulerScoring.matchAll($0, s.samples[$1].refs) }
            let part = zip(cleaned, b.samples).map { RulerScoring.matchPart($0, s.samples[$1].refs) }
            XCTAssertEqual(RulerScoring.taskScore(all), b.string_match_all, "\(b.samples)")
            XCTAssertEqual(RulerScoring.taskScore(part), b.string_match_part, "\(b.samples)")
        }
    }

    /// The whole evaluation on a tiny model: each kind of task generated to fit, answered by greedy decoding and
    /// scored; the report reads back and the effective length follows the threshold.
    func testEvaluationRunsTheTasksAndReportsBack() throws {
        var config = try BuiltinModels.config("tiny")
        config.vocabSize = 1024                                          // the SmolLM2 fixture's ids
        config.maxPositionEmbeddings = 4096
        let model = try BuiltinModels.make(config: config, seed: 3)
        let tokenizer = try Tokenizer(path: Self.smolLM2.path)
        let ruler = try Ruler(tasks: [.niahSingle1, .niahMultikey3, .variableTracking, .commonWords, .frequentWords],
                              contexts: [2048], samples: 1, seed: 42, directory: Self.smolLM2, tokenizer: tokenizer,
                              chat: true)
        XCTAssertTrue(ruler.chat, "the fixture has SmolLM2's ChatML template")
        var lines = 0
        let results = try ruler.evaluate(model: model, tokenizer: tokenizer, progress: { _ in lines += 1 })
        XCTAssertEqual(results.map(\.task), ["niah_single_1", "niah_multikey_3", "vt", "cwe", "fwe"])
        XCTAssertEqual(lines, 5)
        for r in results {
            XCTAssertEqual(r.samples.count, 1)
            for p in r.samples {
                XCTAssertLessThanOrEqual(p.promptTokens, 2048, r.task)
                XCTAssertGreaterThan(p.promptTokens, 1000, "\(r.task): the haystack fills the context")
                XCTAssertEqual(p.score, RulerScoring.matchAll(p.prediction, p.outputs))
            }
        }
        let report = RulerReport(model: "tiny", checkpoint: nil, chatTemplate: false, seed: 42, threshold: 85.6,
                                 results: results, seconds: 1)
        XCTAssertEqual(report.averages.count, 1)

        let made = [("vt", 1024, 90.0), ("cwe", 1024, 85), ("vt", 2048, 80), ("cwe", 2048, 70), ("vt", 4096, 100),
                    ("cwe", 4096, 100)].map { RulerTaskResult(task: $0.0, context: $0.1, score: $0.2, samples: []) }
        let byLength = RulerReport(model: "m", checkpoint: nil, chatTemplate: false, seed: 42, threshold: 85.6,
                                   results: made, seconds: 60)
        XCTAssertEqual(byLength.averages.map(\.score), [87.5, 75, 100])
        XCTAssertEqual(byLength.effectiveLength, 1024, "4096 passes, but 2048 below it does not")
        XCTAssertTrue(byLength.table.contains("effective length (average ≥ 85.6): 1024 tokens"), byLength.table)
        let file = try TemporaryDirectory("ruler")
        defer { file.remove() }
        let url = file.path("ruler.json")
        try JSONEncoder().encode(byLength).write(to: url)
        guard case .ruler(let back) = try EvaluationFile.read(url) else { return XCTFail("not read as a RULER file") }
        XCTAssertEqual(back.results, made)
    }

    /// `--resume`: the tasks an earlier run finished are kept as they were (not run again), the rest run and are
    /// handed out one by one for saving; a file written with other settings is refused, naming the setting.
    func testAResumedRunKeepsWhatItHadAndRefusesOtherSettings() throws {
        var config = try BuiltinModels.config("tiny")
        config.vocabSize = 1024
        config.maxPositionEmbeddings = 4096
        let model = try BuiltinModels.make(config: config, seed: 3)
        let tokenizer = try Tokenizer(path: Self.smolLM2.path)
        func ruler(_ tasks: [RulerTask]) throws -> Ruler {
            try Ruler(tasks: tasks, contexts: [2048], samples: 1, seed: 42, directory: Self.smolLM2,
                      tokenizer: tokenizer, chat: true)
        }
        let first = try ruler([.niahSingle1]).evaluate(model: model, tokenizer: tokenizer)
        var saved: [[String]] = [], lines = 0
        let all = try ruler([.niahSingle1, .variableTracking])
            .evaluate(model: model, tokenizer: tokenizer, earlier: first, finished: { saved.append($0.map(\.task)) },
                      progress: { _ in lines += 1 })
        XCTAssertEqual(all.first, first.first, "kept as it was, time included")
        XCTAssertEqual(all.map(\.task), ["niah_single_1", "vt"])
        XCTAssertEqual(saved, [["niah_single_1", "vt"]], "one save, after the one task that ran")
        XCTAssertEqual(lines, 1, "only vt's sample ran")

        let dir = try TemporaryDirectory("ruler-resume")
        defer { dir.remove() }
        let file = dir.path("ruler.json")
        func run(seed: UInt64 = 42, results: [RulerTaskResult] = []) -> RulerReport {
            RulerReport(model: "m", checkpoint: nil, chatTemplate: true, seed: seed, threshold: 85.6, results: results,
                        seconds: 12)
        }
        XCTAssertTrue(try RulerReport.resumable(from: file, like: run(), samples: 1).results.isEmpty, "no file yet")
        try AtomicFile.writeJSON(run(results: first), to: file)
        let back = try RulerReport.resumable(from: file, like: run(), samples: 1)
        XCTAssertEqual(back.results, first)
        XCTAssertEqual(back.seconds, 12)
        for (other, samples, needle) in [(run(seed: 7), 1, "--seed 42, this run has 7"),
                                         (run(), 3, "--samples 1, this run has 3")] {
            XCTAssertThrowsError(try RulerReport.resumable(from: file, like: other, samples: samples)) {
                XCTAssertTrue("\($0)".contains(needle) && "\($0)".contains(file.path), "\($0)")
            }
        }
        // Not a RULER file: a perplexity file, a torn write, random bytes.
        let perplexity = #"{"model": "m", "original_context": 8192, "results": [{"context": 2048, "windows": 1, "#
            + #""tokens": 2047, "nll": 2.0, "perplexity": 7.39}]}"#
        for (name, text, needle) in [("ppl.json", perplexity, "not a file written by eval ruler"),
                                     ("torn.json", #"{"model": "m", "resu"#, "not a file written by eval"),
                                     ("bytes.json", "\u{0}\u{1}garbage", "not a file written by eval")] {
            let bad = dir.path(name)
            try Data(text.utf8).write(to: bad)
            XCTAssertThrowsError(try RulerReport.resumable(from: bad, like: run(), samples: 1), name) {
                XCTAssertTrue("\($0)".contains(needle) && "\($0)".contains(bad.path), "\(name): \($0)")
            }
        }
    }

    func testBadTaskNamesAreRefusedWithTheList() {
        XCTAssertThrowsError(try Ruler.tasks("niah_single_1,niah_single_9")) {
            XCTAssertTrue("\($0)".contains("unknown task \"niah_single_9\"") && "\($0)".contains("fwe"), "\($0)")
        }
        XCTAssertEqual(try Ruler.tasks(nil).count, 11)
        let dir = Self.smolLM2
        for (contexts, seed, needle) in [([4096, 512], UInt64(42), "--context 512: RULER's tasks need at least 1024"),
                                         ([4096], 1 << 33, "--seed must be below 2^32")] {
            XCTAssertThrowsError(try Ruler(tasks: RulerTask.allCases, contexts: contexts, samples: 1, seed: seed,
                                           directory: dir, tokenizer: Tokenizer(path: dir.path), chat: true)) {
                XCTAssertTrue("\($0)".contains(needle), "\($0)")
            }
        }
    }
}
