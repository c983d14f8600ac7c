import Dispatch
import CBLAS

/// Row-major matrix products through OpenBLAS's cblas_sgemm.
public enum BLAS {
    /// C[m, n] = alpha · op(A) · op(B) + beta · C, where op(A) is [m, k] and op(B) is [k, n].
    /// `lda`, `ldb`, `ldc` are row strides of the matrices as stored.
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
        _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, _ c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if beta == 0 {
                for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) }
            } else if beta != 1 {
                for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } }
            }
            return
        }
        if m == 1 {
            // One row (decoding a token): a matrix-vector product. OpenBLAS 0.3.21's sgemm would pack the
            // whole of B first, reading the weights about three times over.
            let incA = Int32(transA ? lda : 1)
            cblas_sgemv(CblasRowMajor, transB ? CblasNoTrans : CblasTrans, Int32(transB ? n : k), Int32(transB ? k : n),
                        alpha, b, Int32(ldb), a, incA, beta, c, 1)
            return
        }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Dense products of whole tensors: op(A)[m, k] · op(B)[k, n], shapes checked.
    public static func gemm(_ a: Tensor, transA: Bool = false, _ b: Tensor, transB: Bool = false,
                            alpha: Float = 1, beta: Float = 0, into c: Tensor) {
        precondition(a.shape.count == 2 && b.shape.count == 2 && c.shape.count == 2)
        let (m, k) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (k2, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        precondition(k == k2 && c.shape == [m, n],
                     "gemm: \(a.shape)\(transA ? "ᵀ" : "") · \(b.shape)\(transB ? "ᵀ" : "") -> \(c.shape)")
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
             a.data, lda: a.shape[1], b.data, ldb: b.shape[1], beta: beta, c.data, ldc: n)
    }

    /// This machine's sgemm rate (GFLOP/s) at one shape: the best of several runs (at least 20 GFLOP
    /// in all), after a warm-up. The yardstick of `bench` and `plan`.
    public static func measureGFlops(m: Int, n: Int, k: Int, transB: Bool = false) -> Double {
        let a = Tensor(zeros: [m, k]), b = Tensor(zeros: transB ? [n, k] : [k, n]), c = Tensor(zeros: [m, n])
        a.fill(0.5); b.fill(0.25)
        let flops = 2.0 * Double(m) * Double(n) * Double(k)
        var best = Double.infinity
        gemm(a, b, transB: transB, into: c)
        for _ in 0..<max(3, Int(2e10 / flops)) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            gemm(a, b, transB: transB, into: c)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        return flops / best / 1e9
    }
}
