import Engine
import TestSupport
import XCTest

/// The bf16 conversions and GEMM (docs/CONVENTIONS.md §15) against scalar and naive twins, on both backends.
final class BF16Tests: XCTestCase {
    override func tearDown() { BF16GEMM.backend = BF16GEMM.hardwareHasBF16 ? .onednn : .widened }

    /// Each backend this machine can run: oneDNN only with AVX512-BF16.
    var backends: [BF16GEMM.Backend] { BF16GEMM.hardwareHasBF16 ? [.onednn, .widened] : [.widened] }

    func testVectorConversionIsTheScalarOne() {
        var rng = SplitMix64(seed: 3)
        var values = (0..<1000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        values += [0, -0, .infinity, -.infinity, .nan, -.nan, .greatestFiniteMagnitude, .leastNonzeroMagnitude,
                   Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x7F7F_FFFF)]
        let count = values.count   // 1011: not a multiple of 16, so the tail runs too
        var bits = [UInt16](repeating: 0, count: count), back = [Float](repeating: 0, count: count)
        BF16.encode(values, &bits, count: count)
        BF16.decode(bits, &back, count: count)
        for i in 0..<count {
            XCTAssertEqual(bits[i], bf16Bits(values[i]), "value \(values[i]) (bits \(values[i].bitPattern))")
            XCTAssertEqual(back[i].bitPattern, floatFromBF16(bits[i]).bitPattern)
        }
        XCTAssertEqual(bits[1000 + 8], 0x3F80, "a tie rounds to the even neighbour (down)")
        XCTAssertEqual(bits[1000 + 9], 0x3F82, "a tie rounds to the even neighbour (up)")
        XCTAssertEqual(bits[1000 + 10], 0x7F80, "the largest float rounds to infinity")
        XCTAssertTrue(floatFromBF16(bits[1000 + 4]).isNaN)
    }

    /// Every backend, transposes and accumulation: C equals the double-precision sum of the bf16 products within
    /// fp32 summation error.
    func testGEMMMatchesNaiveProductsOfTheBF16Values() {
        var rng = SplitMix64(seed: 5)
        for backend in backends {
            BF16GEMM.backend = backend
            for (m, n, k) in [(37, 29, 70), (64, 96, 128), (5, 1, 17), (200, 33, 9), (1, 70, 37)] {   // m = 1: rowDots
                for (transA, transB, accumulate) in [(false, true, false), (false, false, true), (true, false, false),
                                                     (true, true, true)] {
                    let a = (0..<m * k).map { _ in bf16Bits(Float.random(in: -1...1, using: &rng)) }
                    let b = (0..<k * n).map { _ in bf16Bits(Float.random(in: -1...1, using: &rng)) }
                    let start = (0..<m * n).map { _ in Float.random(in: -1...1, using: &rng) }
                    // A stored [m, k] or [k, m]; B stored [k, n] or [n, k]; each with a row stride 3 wider.
                    let lda = (transA ? m : k) + 3, ldb = (transB ? k : n) + 3, ldc = n + 3
                    var sa = [UInt16](repeating: 0x7FC0, count: (transA ? k : m) * lda)
                    var sb = [UInt16](repeating: 0x7FC0, count: (transB ? n : k) * ldb)
                    for i in 0..<m { for p in 0..<k { sa[transA ? p * lda + i : i * lda + p] = a[i * k + p] } }
                    for p in 0..<k { for j in 0..<n { sb[transB ? j * ldb + p : p * ldb + j] = b[p * n + j] } }
                    var c = [Float](repeating: .nan, count: m * ldc)
                    for i in 0..<m { for j in 0..<n { c[i * ldc + j] = accumulate ? start[i * n + j] : .nan } }
                    BF16GEMM.gemm(transA: transA, transB: transB, m: m, n: n, k: k, sa, lda: lda, sb, ldb: ldb,
                                  accumulate: accumulate, &c, ldc: ldc)
                    for i in 0..<m {
                        for j in 0..<n {
                            var exact = accumulate ? Double(start[i * n + j]) : 0, magnitude = 0.0
                            for p in 0..<k {
                                let x = Double(floatFromBF16(a[i * k + p])) * Double(floatFromBF16(b[p * n + j]))
                                exact += x
                                magnitude += abs(x)
                            }
                            XCTAssertEqual(Double(c[i * ldc + j]), exact, accuracy: 1e-6 * (magnitude + 1),
                                           "\(backend) \(m)x\(n)x\(k) transA \(transA) transB \(transB) acc \(accumulate)")
                        }
                    }
                }
            }
        }
    }

    /// A bf16 linear layer equals the fp32 one on bf16-rounded operands: forward, and the input gradient with
    /// the output gradient rounded to bf16; a quantized matrix dequantizes into its fp32 values rounded to bf16.
    func testLinearInBF16IsTheProductOfRoundedOperands() {
        var rng = SplitMix64(seed: 7)
        let (t, inF, outF) = (33, 80, 48)
        let x = Tensor(shape: [t, inF], uniform: -1, 1, rng: &rng)
        let w = Tensor(shape: [outF, inF], uniform: -1, 1, rng: &rng)
        let dy = Tensor(shape: [t, outF], uniform: -1, 1, rng: &rng)
        let nf4 = try! NF4Matrix.quantize(w.data, shape: w.shape, blockSize: 64, doubleQuant: true, name: "w")
        for backend in backends {
            BF16GEMM.backend = backend
            for (name, stored) in [("bf16", HalfMatrix(w, dtype: .bf16) as QuantizedMatrix), ("nf4", nf4)] {
                stored.computeDType = .bf16
                let rounded = stored.dequantized()
                roundTrip(rounded, through: .bf16)
                let g = Graph(), xv = Variable(x, requiresGrad: true)
                let y = g.linear(xv, quantized: stored)
                g.backward(y, seed: dy)

                let xr = x.copy(), dyr = dy.copy()
                roundTrip(xr, through: .bf16); roundTrip(dyr, through: .bf16)
                let ref = Graph(), xrv = Variable(xr, requiresGrad: true)
                let yr = ref.linear(xrv, weight: Variable(rounded))
                ref.backward(yr, seed: dyr)
                assertClose(y.value.array, yr.value.array, atol: 1e-5, rtol: 1e-5, "\(backend) \(name) forward")
                assertClose(xv.grad!.array, xrv.grad!.array, atol: 1e-5, rtol: 1e-5, "\(backend) \(name) dx")
                // The unrounded product differs: the test sees the rounding.
                let plain = Graph().linear(Variable(x), weight: Variable(w))
                XCTAssertGreaterThan(zip(plain.value.array, y.value.array).map { abs($0 - $1) }.max()!, 1e-3)
            }
        }
    }
}
