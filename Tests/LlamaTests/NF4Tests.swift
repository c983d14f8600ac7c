import Engine
import Formats
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
