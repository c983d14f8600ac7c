import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama
import TestSupport
import XCTest

/// Generation against transformers' greedy `generate` (fixtures from
/// Tools/reference/make_generate_fixtures.py), and the sampler on fixed distributions.
final class GenerationTests: XCTestCase {
    struct Case: Decodable {
        let model: String?, name: String?
        let prompt: [Int32], tokens: [Int32]
        let eos_token_id: Int32?
    }

    static func cases(_ file: String) throws -> [Case] {
        let url = TransformersGoldenTests.fixtures.appendingPathComponent("generate/\(file)")
        return try JSONDecoder().decode([Case].self, from: Data(contentsOf: url))
    }

    func testGreedyEqualsTransformersOnTinyModels() throws {
        for c in try Self.cases("tiny.json") {
            let model = try KVCacheTests.fixture(c.model!)
            for chunk in [512, 7] {
                let settings = try GenerationSettings(maxTokens: c.tokens.count, prefillChunk: chunk)
                let (tokens, stats) = try Generation.run(model: model, prompt: c.prompt, settings: settings)
                XCTAssertEqual(tokens, c.tokens, "\(c.model!) prefill chunk \(chunk)")
                XCTAssertEqual(stats.generatedTokens, c.tokens.count)
                XCTAssertFalse(stats.stoppedAtStopToken)
            }
        }
    }

    /// SmolLM2-135M (the quickstart's import) against transformers, when the model is on this machine:
    /// LONGTUNE_SMOLLM2 or models/smollm2-135m in the repository.
    func testGreedyEqualsTransformersOnSmolLM2() throws {
        let dir = ProcessInfo.processInfo.environment["LONGTUNE_SMOLLM2"]
            ?? repositoryRoot.appendingPathComponent("models/smollm2-135m").path
        guard FileManager.default.fileExists(atPath: dir + "/config.json") else {
            throw XCTSkip("SmolLM2-135M not imported here (scripts/quickstart.sh imports it; or set LONGTUNE_SMOLLM2)")
        }
        let model = try LlamaForCausalLM(directory: try ModelDirectory(URL(fileURLWithPath: dir)))
        for c in try Self.cases("smollm2.json") {
            let settings = try GenerationSettings(maxTokens: c.tokens.count, stopTokens: Set(c.eos_token_id.map { [$0] } ?? []),
                                                  prefillChunk: 512)
            let (tokens, _) = try Generation.run(model: model, prompt: c.prompt, settings: settings)
            XCTAssertEqual(tokens, c.tokens, c.name!)
        }
    }

    func testGenerationStopsAtAStopTokenAndKeepsIt() throws {
        let c = try Self.cases("tiny.json")[0]
        let model = try KVCacheTests.fixture(c.model!)
        let stop = c.tokens[5]
        let first = c.tokens.firstIndex(of: stop)!
        let settings = try GenerationSettings(maxTokens: 40, stopTokens: [stop])
        let (tokens, stats) = try Generation.run(model: model, prompt: c.prompt, settings: settings)
        XCTAssertEqual(tokens, Array(c.tokens[...first]))
        XCTAssertTrue(stats.stoppedAtStopToken)
    }

    // MARK: sampling

    func testTemperatureZeroIsGreedyAndSeedsReproduce() throws {
        var rng = SplitMix64(seed: 3)
        let logits = (0..<50).map { _ in rng.nextFloat() * 6 }
        var greedy = Sampler(try SamplingSettings(temperature: 0, seed: 9))
        XCTAssertEqual(greedy.next(logits), Sampler.argmax(logits))
        let settings = try SamplingSettings(temperature: 0.8, topK: 20, topP: 0.9, seed: 42)
        var a = Sampler(settings), b = Sampler(settings)
        var c = Sampler(try SamplingSettings(temperature: 0.8, topK: 20, topP: 0.9, seed: 43))
        let drawsA = (0..<200).map { _ in a.next(logits) }, drawsB = (0..<200).map { _ in b.next(logits) }
        XCTAssertEqual(drawsA, drawsB)
        XCTAssertNotEqual(drawsA, (0..<200).map { _ in c.next(logits) })
    }

    func testTopKAndTopPOnAFixedDistribution() throws {
        // Probabilities 0.5, 0.3, 0.15, 0.05 for tokens 2, 0, 3, 1.
        let logits = [0.3, 0.05, 0.5, 0.15].map { Float(Foundation.log($0)) }
        func kept(_ s: SamplingSettings) -> [Int32] { Sampler.distribution(logits, s).map(\.token) }
        XCTAssertEqual(kept(try SamplingSettings(temperature: 1)), [2, 0, 3, 1])
        XCTAssertEqual(kept(try SamplingSettings(temperature: 1, topK: 2)), [2, 0])
        XCTAssertEqual(kept(try SamplingSettings(temperature: 1, topP: 0.7)), [2, 0])     // 0.05 + 0.15 ≤ 0.3
        XCTAssertEqual(kept(try SamplingSettings(temperature: 1, topP: 0.85)), [2, 0, 3])  // 0.05 ≤ 0.15
        XCTAssertEqual(kept(try SamplingSettings(temperature: 1, topP: 0.01)), [2])        // at least one token
        let p = Sampler.distribution(logits, try SamplingSettings(temperature: 1, topK: 2))
        XCTAssertEqual(p[0].p, 0.5 / 0.8, accuracy: 1e-6)
        // Temperature 2 flattens: p ∝ sqrt(original p).
        let flat = Sampler.distribution(logits, try SamplingSettings(temperature: 2))
        XCTAssertEqual(flat[0].p / flat[3].p, (0.5 / 0.05).squareRoot(), accuracy: 1e-4)
        // Draws follow the distribution.
        var s = Sampler(try SamplingSettings(temperature: 1, topP: 0.85, seed: 1))
        var counts = [Int32: Int]()
        for _ in 0..<20000 { counts[s.next(logits), default: 0] += 1 }
        XCTAssertNil(counts[1])
        XCTAssertEqual(Double(counts[2]!) / 20000, 0.5 / 0.95, accuracy: 0.015)
        XCTAssertEqual(Double(counts[3]!) / 20000, 0.15 / 0.95, accuracy: 0.015)
    }

    func testSettingsRejectNonsense() {
        expectError(["--temperature"]) { _ = try SamplingSettings(temperature: -1) }
        expectError(["--top-k"]) { _ = try SamplingSettings(topK: 0) }
        expectError(["--top-p"]) { _ = try SamplingSettings(topP: 0) }
        expectError(["--max-tokens"]) { _ = try GenerationSettings(maxTokens: 0) }
    }
}
