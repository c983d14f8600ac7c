import Datasets
import Engine
import Evaluation
import Formats
import Foundation
import Llama
import XCTest

final class TokenDatasetTests: XCTestCase {
    let dir = TransformersGoldenTests.fixtures.appendingPathComponent("datasets")

    func testRowsOfInt64ByHyperslab() throws {
        let d = try TokenDataset(dir.appendingPathComponent("rows_int64.h5"), vocabSize: 100)
        XCTAssertEqual(d.shape, [3, 10])
        XCTAssertEqual(try d.row(1), (10..<20).map { Int32($0 * 3) })
        // A stream slice across the row boundary.
        XCTAssertEqual(try d.tokens(offset: 8, count: 4), [24, 27, 30, 33])
        XCTAssertEqual(try d.optionalRow("document_ids", 2), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
        XCTAssertNil(try d.optionalRow("labels", 0))
        XCTAssertEqual(d.attributes["seq_len"], "10")
        XCTAssertEqual(d.attributes["format"], "longtune-packed")
    }

    func testUInt16Stream() throws {
        let d = try TokenDataset(dir.appendingPathComponent("stream_uint16.h5"))
        XCTAssertNil(d.rowLength)
        XCTAssertEqual(try d.tokens(offset: 20, count: 5), [140, 147, 154, 161, 168])
        XCTAssertThrowsError(try d.tokens(offset: 20, count: 6))
    }

    func testErrorsNameFileRowAndColumn() throws {
        let oov = try TokenDataset(dir.appendingPathComponent("out_of_vocab.h5"), vocabSize: 100)
        XCTAssertThrowsError(try oov.row(1)) { e in
            XCTAssertTrue("\(e)".contains("row 1, column 4") && "\(e)".contains("out_of_vocab.h5") && "\(e)".contains("500"), "\(e)")
        }
        XCTAssertThrowsError(try TokenDataset(dir.appendingPathComponent("no_input_ids.h5"))) {
            XCTAssertTrue("\($0)".contains("input_ids"), "\($0)")
        }
        XCTAssertThrowsError(try TokenDataset(dir.appendingPathComponent("missing.h5"))) {
            XCTAssertTrue("\($0)".contains("no such dataset"), "\($0)")
        }
        let notHDF5 = FileManager.default.temporaryDirectory.appendingPathComponent("not-\(getpid()).h5")
        try Data("hello".utf8).write(to: notHDF5)
        XCTAssertThrowsError(try TokenDataset(notHDF5)) { XCTAssertTrue("\($0)".contains("not a readable HDF5"), "\($0)") }
    }
}

final class PerplexityTests: XCTestCase {
    func testOneFullWindowEqualsTransformersLoss() throws {
        let fx = TransformersGoldenTests.fixtures
        let model = try LlamaForCausalLM(directory: try ModelDirectory(fx.appendingPathComponent("default_gqa")))
        let data = try TokenDataset(fx.appendingPathComponent("datasets/default_gqa_tokens.h5"), vocabSize: model.config.vocabSize)
        let info = try JSONSerialization.jsonObject(with: Data(contentsOf: fx.appendingPathComponent("default_gqa/expected.json"))) as! [String: Any]
        let r = try Perplexity.evaluate(model: model, data: data, contexts: [80, 40], stride: 20)
        XCTAssertEqual(r[0].windows, 1); XCTAssertEqual(r[0].tokens, 79)
        XCTAssertEqual(r[0].nll, info["loss"] as! Double, accuracy: 1e-4)
        // Windows at 0, 20, 40: each the mean over its own 39 targets.
        XCTAssertEqual(r[1].windows, 3); XCTAssertEqual(r[1].tokens, 117)
        let ids = try data.tokens(offset: 0, count: 80)
        var sum = 0.0
        for s in [0, 20, 40] {
            let w = Array(ids[s..<(s + 40)])
            sum += Double(try model.loss(Graph(recording: false), ids: w, context: try model.context(length: 40)).value[0])
        }
        XCTAssertEqual(r[1].nll, sum / 3, accuracy: 1e-6)
        XCTAssertThrowsError(try Perplexity.evaluate(model: model, data: data, contexts: [81]))
    }

    func testDynamicRopeWindowsRunOnTheirOwn() throws {
        // Dynamic NTK's frequencies depend on the window length (max_position_embeddings is 32 here),
        // so a 40-token window is not the prefix of the 80-token window at the same start.
        let fx = TransformersGoldenTests.fixtures
        let model = try LlamaForCausalLM(directory: try ModelDirectory(fx.appendingPathComponent("default_gqa")),
                                         ropeOverride: RopeScaling(kind: .dynamic, factor: 2))
        let data = try TokenDataset(fx.appendingPathComponent("datasets/default_gqa_tokens.h5"), vocabSize: model.config.vocabSize)
        let ids = try data.tokens(offset: 0, count: 80)
        let prefix = try model.tokenLosses(ids: ids, context: try model.context(length: 80))[0..<39].reduce(0, +) / 39
        let own = Double(try model.loss(Graph(recording: false), ids: Array(ids[0..<40]), context: try model.context(length: 40)).value[0])
        XCTAssertGreaterThan(abs(prefix - own), 1e-4, "the fixture must make dynamic RoPE length-dependent")
        let r = try Perplexity.evaluate(model: model, data: data, contexts: [80, 40], maxWindows: 1)
        XCTAssertEqual(r[1].nll, own, accuracy: 1e-6)
        // With static RoPE the same call shares one pass, and the prefix is exact.
        let plain = try LlamaForCausalLM(directory: try ModelDirectory(fx.appendingPathComponent("default_gqa")))
        let shared = try Perplexity.evaluate(model: plain, data: data, contexts: [80, 40], maxWindows: 1)
        let own40 = Double(try plain.loss(Graph(recording: false), ids: Array(ids[0..<40]), context: try plain.context(length: 40)).value[0])
        XCTAssertEqual(shared[1].nll, own40, accuracy: 1e-6)
    }
}
