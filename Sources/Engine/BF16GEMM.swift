import CDNNL
import Foundation

/// Matrix products of bf16 operands with fp32 accumulation and an fp32 result (docs/CONVENTIONS.md §15): what
/// `model.compute_dtype: bf16` runs the frozen weights' products in.
///
/// Two backends compute the same thing, the exact products of the bf16 values summed in fp32:
/// - `onednn`: oneDNN's matmul primitive, which on AVX512-BF16 runs `vdpbf16ps` (two products per lane and
///   cycle): ~430 GFLOP/s on this machine's two Zen 4 cores against sgemm's ~205. oneDNN is the library PyTorch
///   uses for this, and it reaches the hardware's bf16 rate at the training step's shapes, so there is no
///   hand-written micro-kernel (`longtune bench kernels` shows both rates side by side).
/// - `widened`: both operands widened to fp32 and multiplied by sgemm, for CPUs without AVX512-BF16 (where
///   oneDNN would emulate bf16 more slowly than sgemm runs). Only the summation order differs.
/// A single row times Bᵀ (decoding) takes neither: `rowDots` reads B's bf16 rows directly.
public enum BF16GEMM {
    public enum Backend: String, Sendable {
        case onednn, widened
    }

    /// The backend in use: oneDNN when the CPU has AVX512-BF16 and oneDNN builds the product, else widened.
    /// `LONGTUNE_BF16_GEMM=widened` in the environment forces the fallback; tests switch it to cover both.
    nonisolated(unsafe) public static var backend: Backend = defaultBackend()

    static func defaultBackend() -> Backend {
        if ProcessInfo.processInfo.environment["LONGTUNE_BF16_GEMM"] == "widened" { return .widened }
        return hardwareHasBF16 && Library.shared != nil ? .onednn : .widened
    }

    /// Whether this CPU has the AVX512-BF16 dot-product instructions (and `LONGTUNE_ISA` leaves them in use).
    public static var hardwareHasBF16: Bool { CPU.hasAVX512BF16 }

    /// C[m, n] = op(A)[m, k] · op(B)[k, n] (+ C when `accumulate`): A and B bf16 bit patterns, C fp32, row-major
    /// with row strides lda, ldb, ldc as stored; op transposes when asked (A stored [k, m], B stored [n, k]).
    public static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                            _ a: UnsafePointer<UInt16>, lda: Int, _ b: UnsafePointer<UInt16>, ldb: Int,
                            accumulate: Bool = false, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        if m == 1 && transB && !transA && k > 0 {
            // One row times Bᵀ (decoding a token): memory-bound dot products that read the bf16 rows as they are.
            return rowDots(n: n, k: k, a, b, ldb: ldb, accumulate: accumulate, c)
        }
        if k == 0 || backend == .widened || m == 1 {
            return widenedGEMM(transA: transA, transB: transB, m: m, n: n, k: k, a, lda: lda, b, ldb: ldb,
                               accumulate: accumulate, c, ldc: ldc)
        }
        let shape = Shape(m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, transA: transA, transB: transB,
                          accumulate: accumulate)
        Library.shared!.run(shape, a, b, c)
    }

    /// c[j] (+)= Σ_p x[p] · B[j, p] for j < n: one row x (k values) against n rows of B (row stride ldb), in fp32.
    /// Half the bytes of an fp32 sgemv, which is what bounds it. B is read 32 values at a time as 16 words of two
    /// bf16 each: a word shifted left by 16 is the even value in fp32, the word with its low half cleared the odd
    /// one; x is laid out once per call as its even and odd values of each 32, so no widening instruction is needed.
    static func rowDots(n: Int, k: Int, _ x: UnsafePointer<UInt16>, _ b: UnsafePointer<UInt16>, ldb: Int,
                        accumulate: Bool, _ c: UnsafeMutablePointer<Float>) {
        let k32 = k / 32 * 32
        let xf = Tensor(uninitialized: [k])   // [even 16, odd 16] per 32 values, then the tail as it is
        let xs = xf.data
        for base in stride(from: 0, to: k32, by: 32) {
            for i in 0..<16 {
                xs[base + i] = floatFromBF16(x[base + 2 * i])
                xs[base + 16 + i] = floatFromBF16(x[base + 2 * i + 1])
            }
        }
        for p in k32..<k { xs[p] = floatFromBF16(x[p]) }
        let high = SIMD16<UInt32>(repeating: 0xFFFF_0000)
        @inline(__always) func dot(_ row: UnsafePointer<UInt16>) -> Float {
            var even = SIMD16<Float>(), odd = SIMD16<Float>(), p = 0
            while p < k32 {
                let w = UnsafeRawPointer(row + p).loadUnaligned(as: SIMD16<UInt32>.self)
                even = even.addingProduct(UnsafeRawPointer(xs + p).loadUnaligned(as: SIMD16<Float>.self),
                                          unsafeBitCast(w &<< 16, to: SIMD16<Float>.self))
                odd = odd.addingProduct(UnsafeRawPointer(xs + p + 16).loadUnaligned(as: SIMD16<Float>.self),
                                        unsafeBitCast(w & high, to: SIMD16<Float>.self))
                p += 32
            }
            var sum = (even + odd).sum()
            while p < k { sum += xs[p] * floatFromBF16(row[p]); p += 1 }
            return sum
        }
        Parallel.chunks(n, minChunk: 256) { rows in
            for j in rows {
                let sum = dot(b + j * ldb)
                c[j] = accumulate ? c[j] + sum : sum
            }
        }
        withExtendedLifetime(xf) {}
    }

    /// The widened backend: each operand widened to fp32 (as stored, strides kept), then sgemm.
    static func widenedGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            _ a: UnsafePointer<UInt16>, lda: Int, _ b: UnsafePointer<UInt16>, ldb: Int,
                            accumulate: Bool, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        let aCount = transA ? (k - 1) * lda + m : (m - 1) * lda + k
        let bCount = transB ? (n - 1) * ldb + k : (k - 1) * ldb + n
        let wa = Tensor(uninitialized: [max(aCount, 1)]), wb = Tensor(uninitialized: [max(bCount, 1)])
        if k > 0 {
            BF16.decode(a, wa.data, count: aCount)
            BF16.decode(b, wb.data, count: bCount)
        }
        BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, wa.data, lda: lda, wb.data, ldb: ldb,
                  beta: accumulate ? 1 : 0, c, ldc: ldc)
    }

    /// What bf16 compute costs where the CPU has no bf16 instructions (nil where it has them): `bench` says it.
    public static var fallbackNote: String? {
        backend == .widened && !hardwareHasBF16
            ? "this CPU has no AVX512-BF16: bf16 compute widens its operands to fp32 for sgemm and keeps attention in "
                + "fp32 (the same results as the bf16 scheme, about 5% slower than fp32 compute; it halves the frozen "
                + "weights' memory)"
            : nil
    }

    /// The implementation oneDNN picked for a representative shape ("brg:avx512_core_bf16" on AVX512-BF16), or
    /// "widened to fp32 + sgemm": shown by `bench`.
    public static var implementation: String {
        guard backend == .onednn, let library = Library.shared else { return "widened to fp32 + sgemm" }
        return "oneDNN " + library.implementation(of: Shape(m: 64, n: 64, k: 64, lda: 64, ldb: 64, ldc: 64,
                                                             transA: false, transB: true, accumulate: false))
    }

    /// This process's bf16 GEMM rate (GFLOP/s) at C = A · Bᵀ of one shape: best of several runs (at least 20 GFLOP
    /// in all), after a warm-up, as `BLAS.measureGFlops` measures sgemm.
    public static func measureGFlops(m: Int, n: Int, k: Int) -> Double {
        let a = [UInt16](repeating: bf16Bits(0.5), count: m * k), b = [UInt16](repeating: bf16Bits(0.25), count: n * k)
        let c = Tensor(zeros: [m, n])
        let flops = 2.0 * Double(m) * Double(n) * Double(k)
        var best = Double.infinity
        for run in 0...max(3, Int(2e10 / flops)) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            gemm(transB: true, m: m, n: n, k: k, a, lda: k, b, ldb: k, c.data, ldc: n)
            if run > 0 { best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
        }
        return flops / best / 1e9
    }

    struct Shape: Hashable {
        let m, n, k, lda, ldb, ldc: Int
        let transA, transB, accumulate: Bool
    }

    /// oneDNN's engine and stream, and one primitive per product shape (creating one costs far more than
    /// running it), kept for the life of the process.
    final class Library: @unchecked Sendable {
        nonisolated(unsafe) static let shared = Library()

        let engine: dnnl_engine_t
        let stream: dnnl_stream_t
        var products: [Shape: UnsafeMutablePointer<lt_bf16_matmul>] = [:]
        let lock = NSLock()

        init?() {
            var engine: dnnl_engine_t?, stream: dnnl_stream_t?
            guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success, let engine else { return nil }
            guard dnnl_stream_create(&stream, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success,
                  let stream else { return nil }
            self.engine = engine
            self.stream = stream
        }

        func product(_ s: Shape) -> UnsafeMutablePointer<lt_bf16_matmul> {
            if let p = products[s] { return p }
            let p = UnsafeMutablePointer<lt_bf16_matmul>.allocate(capacity: 1)
            let status = lt_bf16_matmul_create(p, engine, Int64(s.m), Int64(s.n), Int64(s.k), Int64(s.lda),
                                               Int64(s.ldb), Int64(s.ldc), s.transA ? 1 : 0, s.transB ? 1 : 0,
                                               s.accumulate ? 1 : 0)
            precondition(status == dnnl_success, "oneDNN could not build a bf16 product \(s) (status \(status))")
            products[s] = p
            return p
        }

        func run(_ s: Shape, _ a: UnsafePointer<UInt16>, _ b: UnsafePointer<UInt16>, _ c: UnsafeMutablePointer<Float>) {
            lock.lock()
            defer { lock.unlock() }
            let status = lt_bf16_matmul_run(product(s), stream, a, b, c)
            precondition(status == dnnl_success, "oneDNN failed a bf16 product \(s) (status \(status))")
        }

        func implementation(of s: Shape) -> String {
            lock.lock()
            defer { lock.unlock() }
            return String(cString: lt_bf16_matmul_impl(product(s)))
        }
    }
}

/// Vectorized fp32 ↔ bf16 conversions (round to nearest even, NaN kept quiet with its sign), bit for bit the
/// scalar `bf16Bits` / `floatFromBF16`; in parallel over large arrays.
public enum BF16 {
    @inline(__always) static func encode(_ x: SIMD16<Float>) -> SIMD16<UInt16> {
        let b = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        var rounded = (b &+ 0x7FFF &+ ((b &>> 16) & 1)) &>> 16
        rounded.replace(with: (b &>> 16) | 0x0040, where: x .!= x)
        return SIMD16<UInt16>(truncatingIfNeeded: rounded)
    }

    /// dst[i] = bf16 bits of src[i], i < count.
    public static func encode(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        Parallel.chunks(count, minChunk: 1 << 16) { r in
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let x = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(dst + i).storeBytes(of: encode(x), as: SIMD16<UInt16>.self)
                i += 16
            }
            while i < r.upperBound { dst[i] = bf16Bits(src[i]); i += 1 }
        }
    }

    /// dst[i] = the float of bf16 bits src[i], i < count.
    public static func decode(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.chunks(count, minChunk: 1 << 16) { r in
            var i = r.lowerBound
            while i + 16 <= r.upperBound {
                let h = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<UInt16>.self)
                let w = SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16
                UnsafeMutableRawPointer(dst + i).storeBytes(of: unsafeBitCast(w, to: SIMD16<Float>.self),
                                                            as: SIMD16<Float>.self)
                i += 16
            }
            while i < r.upperBound { dst[i] = floatFromBF16(src[i]); i += 1 }
        }
    }

    /// `count` floats in bf16, in a fresh buffer.
    public static func encode(_ src: UnsafePointer<Float>, count: Int) -> BF16Buffer {
        let b = BF16Buffer(count: count)
        b.withBits { encode(src, $0, count: count) }
        return b
    }

    /// A tensor's values in bf16.
    public static func encode(_ t: Tensor) -> BF16Buffer { encode(t.data, count: t.count) }
}

/// bf16 values held in a tensor's memory, two per fp32 slot: transient bf16 copies (activations rounded for a
/// product, a quantized weight dequantized into bf16) recycle through the buffer cache as fp32 tensors do, so they
/// cost no page faults, and count in the memory statistics that `plan` reads.
public final class BF16Buffer {
    let storage: Tensor
    public let count: Int

    public init(count: Int) {
        self.count = count
        storage = Tensor(uninitialized: [(count + 1) / 2])
    }

    /// The values, valid only while the buffer lives: read them inside `withBits`.
    var bits: UnsafeMutablePointer<UInt16> {
        UnsafeMutableRawPointer(storage.data).assumingMemoryBound(to: UInt16.self)
    }

    /// Calls `body` with the values, keeping the buffer alive until it returns.
    public func withBits<R>(_ body: (UnsafeMutablePointer<UInt16>) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(bits) }
    }
}
