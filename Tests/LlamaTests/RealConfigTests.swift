import Foundation
import Llama
import TestSupport
import XCTest

/// Real configs (Tests/LlamaTests/Fixtures/real_configs, sources in Tools/reference/make_real_config_fixtures.py) read
/// as transformers reads them: the family, rotary share, window and original context, and the RoPE frequencies and
/// attention scaling at the original window and one token past it, where longrope switches to its long factors.
final class RealConfigTests: XCTestCase {
    static let directory = TransformersGoldenTests.fixtures.appendingPathComponent("real_configs")

    func testRealConfigsGiveTransformersFrequencies() throws {
        let expected = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Self.directory.appendingPathComponent("expected.json"))) as! [String: Any]
        let files = expected.keys.filter { $0.hasSuffix(".json") }
        XCTAssertFalse(files.isEmpty)
        for file in files {
            let e = expected[file] as! [String: Any]
            let config = try LlamaConfig.load(Self.directory.appendingPathComponent(file))
            XCTAssertEqual(config.ropeScaling?.kind.rawValue ?? "default", e["rope_type"] as? String, file)
            XCTAssertEqual(config.rotaryDim, e["rotary_dim"] as? Int, file)
            XCTAssertEqual(config.slidingWindow, e["sliding_window"] as? Int, file)
            let original = e["original_max_position_embeddings"] as! Int
            XCTAssertEqual(config.ropeScaling?.originalMaxPositionEmbeddings ?? config.maxPositionEmbeddings, original)
            for (length, sequence) in e["sequences"] as! [String: [String: Any]] {
                let f = RopeFrequencies(scaling: config.ropeScaling, theta: config.ropeTheta, rotaryDim: config.rotaryDim,
                                        maxPositionEmbeddings: config.maxPositionEmbeddings,
                                        sequenceLength: Int(length)!)
                assertClose(f.invFreq.map(Float.init), (sequence["inv_freq"] as! [Double]).map(Float.init),
                            atol: 0, rtol: 1e-6, "\(file) inv_freq at \(length) tokens")
                XCTAssertEqual(f.attentionFactor, sequence["attention_scaling"] as! Double, accuracy: 1e-9,
                               "\(file) attention scaling")
            }
        }
    }
}
