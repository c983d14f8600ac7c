/// The LM head's weight [V, C] as its two products read it: logits z = h·Wᵀ and the hidden states' gradient
/// dh = dz·W. Either an fp32 variable (trained or frozen), or a frozen 16-bit table: a QLoRA base's token embedding
/// tied to the head, kept in the dtype it was stored in (docs/CONVENTIONS.md §14) and widened to fp32 one block of
/// vocabulary rows at a time, so the fp32 table never exists; or a bf16 table with bf16 compute, whose products
/// run in bf16 on the table as it is, with the hidden states (and dz) rounded to bf16 (§15).
public enum HeadWeight {
    case dense(Variable)
    case frozen16(HalfMatrix)

    /// Vocabulary rows widened per block of a 16-bit table: 16 MiB of fp32 at C = 2048, small beside the
    /// table, large enough that each block's sgemm runs at full speed.
    static let rowsPerBlock = 2048

    /// [V, C].
    public var shape: [Int] {
        switch self {
        case .dense(let w): return w.shape
        case .frozen16(let t): return t.shape
        }
    }

    /// The variable that receives a gradient, when the weight can have one.
    var trained: Variable? {
        if case .dense(let w) = self { return w }
        return nil
    }

    /// z[rows, V] = h[rows, C] · Wᵀ (z overwritten).
    public func logits(_ h: UnsafePointer<Float>, rows: Int, into z: UnsafeMutablePointer<Float>) {
        let (v, c) = (shape[0], shape[1])
        switch self {
        case .dense(let w):
            BLAS.gemm(transB: true, m: rows, n: v, k: c, h, lda: c, w.value.data, ldb: c, z, ldc: v)
        case .frozen16(let table) where table.computeDType == .bf16:   // docs/CONVENTIONS.md §15
            BF16.encode(h, count: rows * c).withBits { hb in
                table.withBF16Values { w in
                    BF16GEMM.gemm(transB: true, m: rows, n: v, k: c, hb, lda: c, w, ldb: c, z, ldc: v)
                }
            }
        case .frozen16(let table):
            table.forEachWidenedBlock(rows: Self.rowsPerBlock) { first, block in
                BLAS.gemm(transB: true, m: rows, n: block.shape[0], k: c, h, lda: c, block.data, ldb: c,
                          z + first, ldc: v)
            }
        }
    }

    /// dh[rows, C] = dz[rows, V] · W (dh overwritten).
    public func inputGradient(_ dz: UnsafePointer<Float>, rows: Int, into dh: UnsafeMutablePointer<Float>) {
        let (v, c) = (shape[0], shape[1])
        switch self {
        case .dense(let w):
            BLAS.gemm(m: rows, n: c, k: v, dz, lda: v, w.value.data, ldb: c, dh, ldc: c)
        case .frozen16(let table) where table.computeDType == .bf16:
            BF16.encode(dz, count: rows * v).withBits { dzb in
                table.withBF16Values { w in BF16GEMM.gemm(m: rows, n: c, k: v, dzb, lda: v, w, ldb: c, dh, ldc: c) }
            }
        case .frozen16(let table):
            table.forEachWidenedBlock(rows: Self.rowsPerBlock) { first, block in
                BLAS.gemm(m: rows, n: c, k: block.shape[0], dz + first, lda: v, block.data, ldb: c,
                          beta: first == 0 ? 0 : 1, dh, ldc: c)
            }
        }
    }
}

extension HalfMatrix {
    /// Calls `body(firstRow, block)` for consecutive blocks of up to `rows` rows widened to fp32, in order; the
    /// block's tensor is reused, so `body` must not keep it.
    public func forEachWidenedBlock(rows: Int, _ body: (Int, Tensor) -> Void) {
        let (n, c) = (shape[0], shape[1])
        var buffer = Tensor(uninitialized: [min(rows, n), c])
        bits.withUnsafeBufferPointer { b in
            for first in stride(from: 0, to: n, by: rows) {
                let count = min(rows, n - first)
                if count != buffer.shape[0] { buffer = Tensor(uninitialized: [count, c]) }
                Parallel.chunks(count * c, minChunk: 1 << 16) { r in
                    decodeHalf(b.baseAddress! + first * c + r.lowerBound, buffer.data + r.lowerBound, count: r.count,
                               dtype: dtype)
                }
                body(first, buffer)
            }
        }
    }
}
