import Datasets
import Engine
import Evaluation
import Foundation
import Llama
import XCTest

final class PasskeyTests: XCTestCase {
    /// The GPT-2-style tokenizer fixture of the Datasets tests (read from the source tree).
    static var tokenizer: Tokenizer {
        get throws {
            let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("DatasetsTests/Fixtures/gpt2")
            return try Tokenizer(path: dir.path)
        }
    }

    func testPromptFillsTheContextAndHidesTheKeyAtItsDepth() throws {
        let tok = try Self.tokenizer
        let unit = tok.encode(" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.").count
        for (length, depth) in [(600, 0.0), (600, 0.5), (1000, 1.0), (1001, 0.25)] {
            let p = try Passkey.prompt(tokenizer: tok, length: length, passkey: 48213, depth: depth)
            XCTAssertLessThanOrEqual(p.ids.count, length)
            XCTAssertGreaterThan(p.ids.count, length - unit - 4, "the prompt must fill the context up to less than one filler unit")
            XCTAssertEqual(tok.decode(Array(p.ids[p.answerStart...])), " 48213")
            let text = tok.decode(p.ids)
            XCTAssertTrue(text.hasSuffix("What is the pass key? The pass key is 48213"), text.suffix(60).description)
            let key = text.range(of: "The pass key is 48213. Remember it.")!
            let before = text[..<key.lowerBound].components(separatedBy: "There and back again.").count - 1
            let all = text.components(separatedBy: "There and back again.").count - 1
            XCTAssertEqual(Double(before) / Double(all), depth, accuracy: 0.5 / Double(all) + 1e-9,
                           "key after \(before) of \(all) filler units, asked for depth \(depth)")
        }
        XCTAssertThrowsError(try Passkey.prompt(tokenizer: tok, length: 20, passkey: 1, depth: 0)) {
            XCTAssertTrue("\($0)".contains("shorter than the bare prompt"), "\($0)")
        }
    }

    func testOnePassScoringEqualsGreedyDecoding() throws {
        let model = try BuiltinModels.make("tiny", seed: 3)
        var rng = SplitMix64(seed: 9)
        var ids = (0..<30).map { _ in Int32(rng.next() % 256) }
        let promptLength = ids.count
        // Greedy decoding, one full forward per token.
        for _ in 0..<4 {
            let logits = try model.logits(ids: ids)
            let v = model.config.vocabSize, last = logits.data + (ids.count - 1) * v
            ids.append(Int32((0..<v).max { last[$0] < last[$1] }!))
        }
        let generated = Array(ids[promptLength...])
        let (argmax, logProb) = try Passkey.score(model: model, ids: ids, answerStart: promptLength)
        XCTAssertEqual(argmax, generated, "the greedy answer must score as retrieved")
        // Teacher-forced log-probability equals the per-token losses of the same positions.
        let losses = try model.tokenLosses(ids: ids, context: try model.context(length: ids.count))
        XCTAssertEqual(logProb, -losses[(promptLength - 1)...].reduce(0, +), accuracy: 1e-4)
        // A different answer token is caught at its own position.
        var wrong = ids
        wrong[promptLength + 2] = (wrong[promptLength + 2] + 1) % 256
        let (argmax2, _) = try Passkey.score(model: model, ids: wrong, answerStart: promptLength)
        XCTAssertEqual(Array(argmax2.prefix(3)), Array(generated.prefix(3)))
        XCTAssertNotEqual(argmax2[2], wrong[promptLength + 2])
        // A tokenizer id past the model's vocabulary is an error, not a trap in the embedding lookup.
        XCTAssertThrowsError(try Passkey.score(model: model, ids: ids + [256], answerStart: promptLength)) {
            XCTAssertTrue("\($0)".contains("vocabulary"), "\($0)")
        }
    }
}
