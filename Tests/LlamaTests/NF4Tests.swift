import Engine
import Formats
import Llama
import Training
import Foundation
import TestSupport
import XCTest

/// NF4 storage against bitsandbytes 0.50 (Tools/reference/make_nf4_fixtures.py, docs/CONVENTIONS.md §14):
/// identical packed codes and absmax codes, dequantized values equal.
final class NF4Tests: XCTestCase {
    static let file = TransformersGoldenTests.fixtures.appendingPathComponent("nf4/nf4.safetensors")
    static let cases: [(String, DType)] = [("fp32", .fp32), ("fp16", .fp16), ("bf16", .bf16), ("odd", .fp32),
                                           ("special", .fp32), ("many_blocks", .fp32)]

    func testDynamicMapIsBitsandbytes() throws {
        let f = try SafetensorsFile(Self.file)
        XCTAssertEqual(DynamicMap.signed, try f.tensor("fp32.dq.nested_quant_map").array)
    }

    func testQuantizeAndDequantizeEqualBitsandbytes() throws {
        let f = try SafetensorsFile(Self.file)
        for (name, dtype) in Self.cases {
            let input = try f.tensor("\(name).input")
            for double in [false, true] {
                let q = try NF4Matrix.quantize(input.data, shape: input.shape, doubleQuant: double, name: name)
                let what = "\(name)\(double ? " +dq" : "")"
                XCTAssertEqual(q.packed, try f.rawBytes("\(name).packed"), "\(what): packed codes")
                if case .double(let d) = q.scales {
                    XCTAssertEqual(d.codes, try f.rawBytes("\(name).dq.absmax"), "\(what): absmax codes")
                    // The offset is a mean, which torch sums in another order: equal within an ulp or two.
                    assertClose(d.nestedAbsmax, try f.tensor("\(name).dq.nested_absmax").array, rtol: 1e-6, what)
                    assertClose([d.offset], try f.tensor("\(name).dq.offset").array, rtol: 1e-6, what)
                } else {
                    XCTAssertEqual((0..<q.blockCount).map(q.absmax), try f.tensor("\(name).absmax").array, what)
                }
                // bitsandbytes dequantizes into the dtype the weight had.
                let stored = NF4Matrix(shape: q.shape, blockSize: q.blockSize, packed: q.packed, scales: q.scales,
                                       dtype: dtype)
                let expected = try f.tensor("\(name)\(double ? ".dq" : "").dequant").array
                assertClose(stored.dequantized().array, expected, rtol: double ? 1e-6 : 0, "\(what): dequantized")
            }
        }
    }

    func testBadValuesAreErrors() throws {
        let x: [Float] = [1, .nan, 3, 4]
        expectError(["w.weight", "NaN"]) { _ = try NF4Matrix.quantize(x, shape: [2, 2], doubleQuant: true, name: "w.weight") }
        expectError(["w.weight", "block size 48"]) {
            _ = try NF4Matrix.quantize([1, 2, 3, 4], shape: [2, 2], blockSize: 48, doubleQuant: false, name: "w.weight")
        }
    }
}

/// Hugging Face bitsandbytes 4-bit checkpoints (Tools/reference/make_bnb_fixtures.py): LongTune reads the one
/// transformers saved, and `longtune quantize` writes the same tensors from the fp16 model.
final class BitsandbytesCheckpointTests: XCTestCase {
    static let dir = TransformersGoldenTests.fixtures.appendingPathComponent("bnb")

    func testLoadsATransformersNF4CheckpointWithItsLogits() throws {
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.dir.appendingPathComponent("expected.json")))
            as! [String: Any]
        let ids = (expected["ids"] as! [Int]).map(Int32.init)
        let reference = (expected["logits"] as! [Double]).map(Float.init)
        for quantization in [Quantization(), nil] {   // kept in NF4, or dequantized to fp32 at load
            let model = try LlamaForCausalLM(directory: try ModelDirectory(Self.dir.appendingPathComponent("nf4")),
                                             quantization: quantization)
            XCTAssertEqual(model.quantizableLinears[0].quantized?.kind, quantization == nil ? nil : "nf4+dq")
            assertClose(try model.logits(ids: ids).array, reference, atol: 1e-4, rtol: 1e-4, "logits vs transformers")
        }
    }

    func testQuantizeWritesWhatBitsandbytesSaves() throws {
        let tmp = try TemporaryDirectory("bnb")
        defer { tmp.remove() }
        let out = tmp.path("nf4")
        let report = try QuantizedExport.run(model: Self.dir.appendingPathComponent("fp16"), out: out,
                                             quantization: Quantization(doubleQuant: true))
        XCTAssertEqual(report.quantized, 14)
        let ours = try SafetensorsFile(out.appendingPathComponent("model.safetensors"))
        let theirs = try SafetensorsFile(Self.dir.appendingPathComponent("nf4/model.safetensors"))
        XCTAssertEqual(ours.names, theirs.names)
        for name in theirs.names {
            XCTAssertEqual(ours.entries[name]?.dtype, theirs.entries[name]?.dtype, name)
            XCTAssertEqual(ours.entries[name]?.shape, theirs.entries[name]?.shape, name)
            if name.hasSuffix("nested_absmax") {   // the offset is a mean summed in another order (±1 ulp)
                assertClose(try ours.tensor(name).array, try theirs.tensor(name).array, rtol: 1e-6, name)
            } else if name.hasSuffix(BitsandbytesNF4.stateSuffix) {
                let a = try JSONSerialization.jsonObject(with: Data(try ours.rawBytes(name))) as! [String: Any]
                let b = try JSONSerialization.jsonObject(with: Data(try theirs.rawBytes(name))) as! [String: Any]
                XCTAssertEqual(Set(a.keys), Set(b.keys), name)
                for key in b.keys where key != "nested_offset" { XCTAssertEqual("\(a[key]!)", "\(b[key]!)", "\(name) \(key)") }
                XCTAssertEqual(a["nested_offset"] as! Double, b["nested_offset"] as! Double, accuracy: 1e-8, name)
            } else {
                XCTAssertEqual(try ours.rawBytes(name), try theirs.rawBytes(name), name)
            }
        }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json")))
            as! [String: Any]
        let q = config["quantization_config"] as! [String: Any]
        XCTAssertEqual(q["quant_method"] as? String, "bitsandbytes")
        XCTAssertEqual(q["bnb_4bit_use_double_quant"] as? Bool, true)
    }

    func testCorruptQuantStatesAreClearErrors() throws {
        let tmp = try TemporaryDirectory("bnb-bad")
        defer { tmp.remove() }
        let source = Self.dir.appendingPathComponent("nf4")
        let victim = "model.layers.1.self_attn.k_proj.weight"
        typealias Tensors = [String: (String, [Int], [UInt8])]   // name: (dtype, shape, bytes)
        func editState(_ text: String, _ replacement: String) -> (inout Tensors) -> Void {
            { t in
                let state = Array(String(decoding: t[victim + BitsandbytesNF4.stateSuffix]!.2, as: UTF8.self)
                    .replacingOccurrences(of: text, with: replacement).utf8)
                t[victim + BitsandbytesNF4.stateSuffix] = ("U8", [state.count], state)
            }
        }
        let cases: [(String, (inout Tensors) -> Void, String)] = [
            ("state JSON", { $0[victim + BitsandbytesNF4.stateSuffix] = ("U8", [24], Array("{\"quant_type\": \"nf4\", \"b".utf8)) },
             "not a JSON object"),
            ("fp4", editState("nf4", "fp4"), "quant_type fp4"),
            ("block size", editState("\"blocksize\": 64", "\"blocksize\": 48"), "blocksize 48"),
            ("truncated codes", { t in
                var c = t[victim]!
                c.2 = Array(c.2.prefix(c.2.count - 2)); c.1 = [c.2.count, 1]
                t[victim] = c
            }, "should be U8"),
            ("missing absmax", { $0[victim + ".absmax"] = nil }, "found nothing"),
        ]
        for (label, corrupt, needle) in cases {
            let dir = tmp.path(label.replacingOccurrences(of: " ", with: "-"))
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
            let file = try SafetensorsFile(source.appendingPathComponent("model.safetensors"))
            var tensors: Tensors = [:]
            for n in file.names { tensors[n] = (file.entries[n]!.dtype, file.entries[n]!.shape, try file.rawBytes(n)) }
            corrupt(&tensors)
            let names = tensors.keys.sorted()
            let w = try SafetensorsStreamWriter(url: dir.appendingPathComponent("model.safetensors"), entries: names.map {
                .init(name: $0, dtype: tensors[$0]!.0, shape: tensors[$0]!.1, bytes: tensors[$0]!.2.count) })
            for n in names { try w.write(n, raw: tensors[n]!.2) }
            try w.finish()
            expectError([victim, needle]) {
                _ = try LlamaForCausalLM(directory: try ModelDirectory(dir), quantization: Quantization())
            }
        }
    }
}
