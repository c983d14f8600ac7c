import Engine
import Formats
import Foundation
import Llama
import Training
import TestSupport
import XCTest

/// export-gguf against llama.cpp's own files for a tiny Llama (Tools/reference/make_gguf_export_fixtures.py):
/// convert_hf_to_gguf.py for f16 and q8_0, llama_model_quantize on its f16 file for q4_0 and the K-quant mixes.
/// Every metadata key (but provenance) with its GGUF type and value, and every tensor's type, dims and bytes.
final class GGUFExportTests: XCTestCase {
    let fixture = TransformersGoldenTests.fixtures.appendingPathComponent("gguf_export")
    lazy var expected: [String: Any] = try! JSONSerialization.jsonObject(
        with: Data(contentsOf: fixture.appendingPathComponent("expected.json"))) as! [String: Any]
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("gguf-export") }
    override func tearDown() { tmp.remove() }

    func testEveryTypeEqualsLlamaCppKeyForKeyAndByteForByte() throws {
        for type in GGUFExport.FileType.allCases {
            guard let reference = expected[type.rawValue] as? [String: Any] else { continue }
            let out = tmp.path("\(type.rawValue).gguf")
            _ = try GGUFExport.run(source: fixture.appendingPathComponent("model"), out: out, type: type,
                                   tokenizerPre: "smollm")
            let file = try GGUFFile(out)
            assertMetadata(file, reference["metadata"] as! [String: [String: Any]], type.rawValue)
            assertTensors(file, reference["tensors"] as! [String: [String: Any]], type.rawValue)
        }
    }

    /// llama3 scaling travels as rope_freqs (a divisor per frequency, computed in fp32 as the converter does).
    func testLlama3ScalingBecomesTheRopeFreqsTensor() throws {
        let dir = tmp.path("llama3")
        try FileManager.default.copyItem(at: fixture.appendingPathComponent("model"), to: dir)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        try FileManager.default.copyItem(at: fixture.appendingPathComponent("llama3-config.json"),
                                         to: dir.appendingPathComponent("config.json"))
        let out = tmp.path("llama3.gguf")
        _ = try GGUFExport.run(source: dir, out: out, type: .f16, tokenizerPre: "smollm")
        let reference = expected["llama3_f16"] as! [String: Any], file = try GGUFFile(out)
        assertMetadata(file, reference["metadata"] as! [String: [String: Any]], "llama3")
        assertTensors(file, reference["tensors"] as! [String: [String: Any]], "llama3")
        XCTAssertEqual(file.tensors["rope_freqs.weight"]?.dims, [32])
    }

    func assertMetadata(_ file: GGUFFile, _ reference: [String: [String: Any]], _ label: String) {
        let ours = Set(file.metadata.keys.filter { !Self.isProvenance($0) })
        XCTAssertEqual(ours, Set(reference.keys), "\(label): metadata keys")
        for (key, ref) in reference {
            guard let value = file.metadata[key], let type = file.metadataTypes[key] else { continue }
            XCTAssertEqual(Int(type.type), ref["type"] as? Int, "\(label): \(key) GGUF type")
            XCTAssertEqual(type.element.map(Int.init), ref["elem"] as? Int, "\(label): \(key) element type")
            XCTAssertTrue(Self.equal(value, ref["value"]!), "\(label): \(key) = \(value), llama.cpp has \(ref["value"]!)")
        }
    }

    func assertTensors(_ file: GGUFFile, _ reference: [String: [String: Any]], _ label: String) {
        XCTAssertEqual(Set(file.tensorOrder), Set(reference.keys), "\(label): tensor names")
        for (name, ref) in reference {
            guard let info = file.tensors[name] else { continue }
            XCTAssertEqual(Int(info.type), ref["type"] as? Int, "\(label): \(name) type")
            XCTAssertEqual(info.dims, ref["dims"] as? [Int], "\(label): \(name) dims")
            let count = GGUFFile.storedBytes(info)!
            let bytes = file.withStoredBytes(info) { Array(UnsafeRawBufferPointer(start: $0, count: count)) }
            XCTAssertEqual(SHA256.hex(bytes), ref["sha256"] as? String, "\(label): \(name) bytes differ from llama.cpp's")
        }
    }

    static func isProvenance(_ key: String) -> Bool {
        key.hasPrefix("general.") && !["general.architecture", "general.type", "general.file_type",
                                       "general.quantization_version"].contains(key)
    }

    /// A read value against the JSON of llama.cpp's (f32 values compared as f32).
    static func equal(_ v: GGUFFile.Value, _ ref: Any) -> Bool {
        switch v {
        case .string(let s): return s == ref as? String
        case .bool(let b): return (ref as? NSNumber).map { $0.boolValue == b } ?? false
        case .uint, .int: return v.int == (ref as? NSNumber)?.intValue
        case .float(let f): return (ref as? NSNumber).map { Float($0.doubleValue) == Float(f) } ?? false
        case .array(let items):
            guard let list = ref as? [Any], list.count == items.count else { return false }
            return zip(items, list).allSatisfy { equal($0, $1) }
        }
    }

    /// The pre-tokenizer is named by the SHA-256 of the converter's check text's ids: SmolLM2's ids hash to "smollm".
    func testPreTokenizerHashNamesSmolLM2() throws {
        let check = try XCTUnwrap(expected["pre_check"] as? [String: Any])
        XCTAssertEqual(GGUFVocabulary.checkText, check["text"] as? String, "the converter's check text, character for character")
        let ids = (check["ids"] as! [Int]).map { Int32($0) }
        XCTAssertEqual(GGUFVocabulary.checkHash(ids), check["sha256"] as? String)
        XCTAssertEqual(GGUFVocabulary.preTokenizerName(hash: check["sha256"] as! String), "smollm")
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    /// The tiny tokenizer's own hash is unknown: without --tokenizer-pre the export says so and writes nothing.
    func testUnknownPreTokenizerIsAClearError() throws {
        let out = tmp.path("x.gguf")
        XCTAssertThrowsError(try GGUFExport.run(source: fixture.appendingPathComponent("model"), out: out, type: .f16)) {
            XCTAssertTrue("\($0)".contains("--tokenizer-pre"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp.url.path), [])
    }

    /// Qwen3, Phi-3 and Gemma 3 export as llama.cpp's `qwen3`, `phi3` and `gemma3` architectures: a directory imported from a file laid
    /// out as convert_hf_to_gguf.py writes these families (Tools/reference/make_gguf_family_fixtures.py) exports
    /// at f16 to the same tensors, byte for byte (HF q/k row order; q/k norms; fused attn_qkv/ffn_up; longrope's factor
    /// tensors; Gemma's norms as 1 + w), and to the same `ARCH.*` metadata values. llama.cpp runs the exports
    /// (docs/CONVENTIONS.md §22).
    func testQwen3Phi3AndGemma3ExportAsTheConverterLaysThemOut() throws {
        for family in ["qwen3", "phi3", "gemma3"] {
            let source = try GGUFFile(TransformersGoldenTests.fixtures.appendingPathComponent(
                "gguf_families/tiny-\(family).gguf"))
            let dir = tmp.path("model-\(family)"), out = tmp.path("\(family).gguf")
            try GGUFImport.run(source, to: dir, dtype: .fp32)
            _ = try GGUFExport.run(source: dir, out: out, type: .f16, tokenizerPre: "qwen2")
            let file = try GGUFFile(out)
            XCTAssertEqual(file.metadata["general.architecture"]?.string, family)
            XCTAssertEqual(Set(file.tensorOrder), Set(source.tensorOrder), family)
            for name in source.tensorOrder {
                guard let a = source.tensors[name], let b = file.tensors[name] else { continue }
                XCTAssertEqual(b.type, a.type, "\(family) \(name) type")
                XCTAssertEqual(b.dims, a.dims, "\(family) \(name) dims")
                let bytes = GGMLType(rawValue: a.type)!.rowBytes(a.dims[0]) * a.count / a.dims[0]
                let same = source.withStoredBytes(a) { pa in file.withStoredBytes(b) { memcmp(pa, $0, bytes) == 0 } }
                XCTAssertTrue(same, "\(family) \(name) bytes")
            }
            for key in source.metadata.keys where key.hasPrefix(family + ".") {
                XCTAssertEqual("\(file.metadata[key].map { "\($0)" } ?? "missing")", "\(source.metadata[key]!)",
                               "\(family) \(key)")
            }
        }
    }

    /// A Gemma 3 model that llama.cpp would run with another attention scale or RoPE is refused, naming the field.
    func testGemma3ExportRefusesWhatLlamaCppRunsDifferently() throws {
        let dir = TransformersGoldenTests.fixtures.appendingPathComponent("gemma3")   // query_pre_attn_scalar 20
        XCTAssertThrowsError(try GGUFExport.run(source: dir, out: tmp.path("g.gguf"), type: .f16, tokenizerPre: "qwen2")) {
            XCTAssertTrue("\($0)".contains("query_pre_attn_scalar 20.0 differs from the 24.0"), "\($0)")
        }
        let yarn = tmp.path("gemma3-yarn")
        try FileManager.default.copyItem(at: dir, to: yarn)
        var c = try LlamaConfig.load(dir.appendingPathComponent("config.json"))
        c.queryPreAttnScalar = 24
        c.ropeScaling = RopeScaling(kind: .yarn, factor: 2, originalMaxPositionEmbeddings: 32)
        try JSONEncoder().encode(c).write(to: yarn.appendingPathComponent("config.json"))
        XCTAssertThrowsError(try GGUFExport.run(source: yarn, out: tmp.path("y.gguf"), type: .f16, tokenizerPre: "qwen2")) {
            XCTAssertTrue("\($0)".contains("rope_scaling yarn on Gemma 3"), "\($0)")
        }
    }

    /// Every quantizer's blocks read back through import-gguf's dequantizer within the type's step.
    func testQuantizedBlocksReadBackWithinOneStep() throws {
        var rng = SplitMix64(seed: 5)
        let x = (0..<1024).map { _ in Float.random(in: -1...1, using: &rng) }
        for type in [GGMLType.q8_0, .q4_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .f16, .bf16, .f32] {
            var bytes = [UInt8](repeating: 0, count: type.rowBytes(x.count))
            bytes.withUnsafeMutableBytes { type.quantize(x, count: x.count, into: $0.baseAddress!) }
            var y = [Float](repeating: 0, count: x.count)
            bytes.withUnsafeBytes { raw in
                for b in 0..<(x.count / type.blockSize) {
                    GGUFFile.dequantize(type: type.rawValue, raw.baseAddress! + b * type.blockBytes, &y[b * type.blockSize])
                }
            }
            let bits: Float = switch type {
            case .q4_0, .q4_K: 4
            case .q5_0, .q5_1, .q5_K: 5
            case .q6_K: 6
            case .q8_0, .bf16: 8
            default: 11
            }
            let worst = zip(x, y).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(worst, 2 / Float(1 << Int(bits)) * 1.5, "\(type.name): worst error \(worst)")
        }
    }
}
