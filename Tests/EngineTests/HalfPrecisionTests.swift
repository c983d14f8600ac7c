import Engine
import XCTest

final class HalfPrecisionTests: XCTestCase {
    func testFP16KnownBitPatterns() {
        let cases: [(Float, UInt16)] = [
            (1, 0x3C00), (-2, 0xC000), (65504, 0x7BFF),
            (65520, 0x7C00),                            // halfway to 2^16 rounds to even: infinity
            (Float.infinity, 0x7C00), (-Float.infinity, 0xFC00), (-0.0, 0x8000),
            (0x1p-24, 0x0001),                          // smallest subnormal
            (0x1p-25, 0x0000),                          // tie between 0 and 2^-24: even is 0
            (0x1.8p-24, 0x0002),                        // tie between 1 and 2 subnormal units: even 2
            (0x1p-14, 0x0400),                          // smallest normal
            (1 + 0x1p-11, 0x3C00),                      // tie: stays at even mantissa
            (1 + 0x3p-11, 0x3C02),                      // tie: rounds up to even
            (0.1, 0x2E66),
        ]
        for (x, bits) in cases { XCTAssertEqual(fp16Bits(x), bits, "fp16(\(x))") }
        XCTAssertTrue(floatFromFP16(fp16Bits(.nan)).isNaN)
    }

    func testBF16KnownBitPatterns() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80), (0x3F80_8000, 0x3F80),   // tie to even (down)
            (0x3F81_8000, 0x3F82),                          // tie to even (up)
            (0x3F80_8001, 0x3F81),                          // above the tie
            (0x7F7F_FFFF, 0x7F80),                          // largest float rounds to infinity
            (0x7F7F_7FFF, 0x7F7F),
            (0x0001_8000, 0x0002),                          // subnormal tie up to even
            (0x8000_0000, 0x8000), (0xFF80_0000, 0xFF80),
        ]
        for (x, bits) in cases {
            XCTAssertEqual(bf16Bits(Float(bitPattern: x)), bits, String(format: "bf16(0x%08X)", x))
        }
        let nan = bf16Bits(Float(bitPattern: 0x7F80_0001))  // signalling NaN with a low payload
        XCTAssertTrue(floatFromBF16(nan).isNaN, "NaN must stay NaN, got 0x\(String(nan, radix: 16))")
    }

    func testEveryHalfPatternRoundTrips() {
        for bits in 0...UInt16.max {
            for dtype in [DType.fp16, .bf16] {
                let x = dtype == .fp16 ? floatFromFP16(bits) : floatFromBF16(bits)
                let back = dtype == .fp16 ? fp16Bits(x) : bf16Bits(x)
                if x.isNaN { XCTAssertTrue((dtype == .fp16 ? floatFromFP16(back) : floatFromBF16(back)).isNaN) }
                else if back != bits { XCTFail("\(dtype) 0x\(String(bits, radix: 16)) -> \(x) -> 0x\(String(back, radix: 16))"); return }
            }
        }
    }

    func testDecodeSubnormals() {
        XCTAssertEqual(floatFromFP16(0x0001), 0x1p-24)
        XCTAssertEqual(floatFromFP16(0x03FF), 0x1.ff8p-15)
        XCTAssertEqual(floatFromBF16(0x0001), Float(bitPattern: 0x0001_0000))
    }

    func testBulkEncodeDecode() {
        let src: [Float] = [1, -0.5, 3.140625, 1e-8, 70000]
        var bits = [UInt16](repeating: 0, count: src.count), back = [Float](repeating: 0, count: src.count)
        encodeHalf(src, &bits, count: src.count, dtype: .fp16)
        decodeHalf(bits, &back, count: src.count, dtype: .fp16)
        XCTAssertEqual(back, [1, -0.5, 3.140625, floatFromFP16(fp16Bits(1e-8)), .infinity])
    }
}
