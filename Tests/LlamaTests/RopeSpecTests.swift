import Engine
import Foundation
import Formats
import Llama
import XCTest

/// The check values of docs/CONVENTIONS.md §1–2.
final class RopeSpecTests: XCTestCase {
    func testRotateHalfExample() {
        // d=4, b=1e4, x=[1,2,3,4], m=1 -> [-1.984111, 1.959901, 2.462378, 4.019800]
        let f = RopeFrequencies(scaling: nil, theta: 1e4, rotaryDim: 4, maxPositionEmbeddings: 8, sequenceLength: 2)
        let tables = RopeTables(positions: [1], invFreq: f.invFreq)
        let y = Graph(recording: false).rope(Variable(Tensor(shape: [1, 4], [1, 2, 3, 4])), heads: 1, headDim: 4, tables: tables)
        for (a, b) in zip(y.value.array, [-1.984111, 1.959901, 2.462378, 4.019800] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// The base b' implied by inv_freq[1] = b'^(-2/d).
    func impliedBase(_ f: RopeFrequencies, d: Int) -> Double { pow(f.invFreq[1], -Double(d) / 2) }

    func testDynamicNTKBases() {
        let s = RopeScaling(kind: .dynamic, factor: 2)
        for (len, base) in [(4096, 10000.0), (4097, 10004.96), (8192, 30527.74)] {
            let f = RopeFrequencies(scaling: s, theta: 1e4, rotaryDim: 128, maxPositionEmbeddings: 4096, sequenceLength: len)
            XCTAssertEqual(impliedBase(f, d: 128), base, accuracy: base * 2e-5, "dynamic at \(len)")
        }
    }

    func testStaticAlphaBases() {
        for (alpha, base) in [(2.0, 20221.26), (4.0, 40889.94), (8.0, 82684.62)] {
            let f = RopeFrequencies(scaling: RopeScaling(kind: .ntkAlpha, alpha: alpha), theta: 1e4, rotaryDim: 128,
                                    maxPositionEmbeddings: 4096, sequenceLength: 100)
            XCTAssertEqual(impliedBase(f, d: 128), base, accuracy: base * 2e-5, "alpha \(alpha)")
        }
    }

    func testYaRNRampAndAttentionFactor() {
        // b=1e4, d=128, s=4, L0=4096: (low, high) = (20, 46), A = 1.138629
        let s = RopeScaling(kind: .yarn, factor: 4, originalMaxPositionEmbeddings: 4096)
        let f = RopeFrequencies(scaling: s, theta: 1e4, rotaryDim: 128, maxPositionEmbeddings: 16384, sequenceLength: 100)
        let plain = RopeFrequencies(scaling: nil, theta: 1e4, rotaryDim: 128, maxPositionEmbeddings: 4096, sequenceLength: 100)
        XCTAssertEqual(f.attentionFactor, 1.138629, accuracy: 1e-6)
        for i in 0...20 { XCTAssertEqual(f.invFreq[i], plain.invFreq[i], accuracy: plain.invFreq[i] * 1e-6, "extrapolated \(i)") }
        for i in 46..<64 { XCTAssertEqual(f.invFreq[i], plain.invFreq[i] / 4, accuracy: plain.invFreq[i] * 1e-6, "interpolated \(i)") }
        XCTAssertLessThan(f.invFreq[30], plain.invFreq[30] * 0.99)
        XCTAssertGreaterThan(f.invFreq[30], plain.invFreq[30] / 4 * 1.01)
    }

    func testConfigErrorsNameTheField() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("config.json")
        let base = #"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2"#
        for (json, needle) in [(base + #", "hidden_act": "gelu"}"#, "hidden_act"),
                               (base + #", "rope_scaling": {"rope_type": "weird", "factor": 2}}"#, "weird"),
                               (base + #", "rope_scaling": {"rope_type": "linear"}}"#, "factor"),
                               (#"{"hidden_size": 8}"#, "vocab_size"),
                               (base + #", "architectures": ["GPT2LMHeadModel"]}"#, "architectures"),
                               (base + #", "model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8}"#,
                                "use_sliding_window"),
                               (base + #", "model_type": "mistral", "sliding_window": 0}"#, "sliding_window"),
                               (base + #", "model_type": "phi3", "rope_scaling": {"rope_type": "yarn", "factor": 2}}"#,
                                "Phi3Config reads rope_type \"yarn\" as longrope")] {
            try json.write(to: url, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try LlamaConfig.load(url)) { e in
                XCTAssertTrue("\(e)".contains(needle), "error \"\(e)\" should name \(needle)")
                XCTAssertTrue("\(e)".contains(url.path), "error \"\(e)\" should name the file")
            }
        }
    }

    func testConfigRoundTripWritesBothStyles() throws {
        var c = LlamaConfig(vocabSize: 10, hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1, numAttentionHeads: 2,
                            numKeyValueHeads: 1, maxPositionEmbeddings: 8192, ropeTheta: 1e5)
        c.ropeScaling = RopeScaling(kind: .yarn, factor: 2, originalMaxPositionEmbeddings: 4096)
        let data = try JSONEncoder().encode(c)
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let v4 = obj["rope_scaling"] as! [String: Any], v5 = obj["rope_parameters"] as! [String: Any]
        XCTAssertEqual(v4["type"] as? String, "yarn"); XCTAssertEqual(v4["rope_type"] as? String, "yarn")
        XCTAssertEqual(v5["rope_theta"] as? Double, 1e5); XCTAssertEqual(v5["factor"] as? Double, 2)
        XCTAssertEqual(obj["rope_theta"] as? Double, 1e5)
        XCTAssertEqual(try JSONDecoder().decode(LlamaConfig.self, from: data), c)
    }
}

final class ParameterShapeTests: XCTestCase {
    /// The model walk's names and shapes (known without allocating) equal the allocated tensors' and
    /// the names and shapes transformers saved for the same config.
    func testParameterShapesMatchTheModelAndTransformers() throws {
        for name in ["default_gqa", "bias_headdim_untied", "qwen2"] {
            let dir = try ModelDirectory(TransformersGoldenTests.fixtures.appendingPathComponent(name))
            let walk = LlamaForCausalLM(config: dir.config).parameterShapes()
            let allocated = LlamaForCausalLM(config: dir.config).namedParameters()
            XCTAssertEqual(walk.map(\.0), allocated.map(\.0), name)
            XCTAssertEqual(walk.map(\.1), allocated.map { $0.1.shape }, name)
            XCTAssertEqual(Set(walk.map(\.0)), Set(dir.tensorNames), name)
            for (n, shape) in walk { XCTAssertEqual(try dir.tensor(n)?.shape, shape, "\(name): \(n)") }
        }
    }
}
