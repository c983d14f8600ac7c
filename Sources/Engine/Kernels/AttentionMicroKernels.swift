/// Register-tiled products for attention blocks (one block is 64 keys). They beat sgemm on these small shapes, where
/// OpenBLAS spends its time packing. The head dimension must be a multiple of 16 for `accumulateRows`.
///
/// Two tile shapes, one per instruction set (docs/CONVENTIONS.md §18): AVX-512's 32 registers hold 4 rows × 64
/// columns of accumulators (16 zmm); AVX2's 16 registers hold 6 rows × 16 columns (12 ymm: a `Lanes16` is two), so
/// 64 columns take four passes; with 4 × 64 there they spill. Each output is the same chain of fused multiply-adds
/// in the same order in both, so both give identical bits (`FlashAttentionTests` checks).
enum Micro {
    /// The AVX-512 tiles where the CPU has AVX-512, else AVX2's; tests switch it to compare the two.
    nonisolated(unsafe) static var wide = CPU.isa == .avx512

    /// "4×64 (AVX-512)" or "6×16 (AVX2)": rows × columns of one tile, for `bench`.
    static var tileName: String { wide ? "4×64 (AVX-512)" : "6×16 (AVX2)" }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> Lanes16 {
        UnsafeRawPointer(p).loadUnaligned(as: Lanes16.self)
    }
    @inline(__always) static func store(_ v: Lanes16, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Lanes16.self)
    }
    @inline(__always) static func splat(_ x: Float) -> Lanes16 { Lanes16(repeating: x) }

    /// S[i, 0..<64] = alpha · Σ_c A[i, c] · Bt[c, 0..<64] for i < m: a row block of A ([m, d],
    /// row stride lda) times 64 columns of a transposed matrix Bt ([d, ·], row stride ldb).
    static func scores(m: Int, d: Int, alpha: Float, _ a: UnsafePointer<Float>, lda: Int,
                       _ bt: UnsafePointer<Float>, ldb: Int, _ s: UnsafeMutablePointer<Float>, lds: Int) {
        guard wide else {
            for col in stride(from: 0, to: 64, by: 16) {
                narrowScores(m: m, d: d, alpha: alpha, a, lda: lda, bt + col, ldb: ldb, s + col, lds: lds)
            }
            return
        }
        var i = 0
        while i + 4 <= m {
            let a0 = a + i * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda
            var c00 = Lanes16(), c01 = Lanes16(), c02 = Lanes16(), c03 = Lanes16()
            var c10 = Lanes16(), c11 = Lanes16(), c12 = Lanes16(), c13 = Lanes16()
            var c20 = Lanes16(), c21 = Lanes16(), c22 = Lanes16(), c23 = Lanes16()
            var c30 = Lanes16(), c31 = Lanes16(), c32 = Lanes16(), c33 = Lanes16()
            for c in 0..<d {
                let b = bt + c * ldb
                let b0 = load(b), b1 = load(b + 16), b2 = load(b + 32), b3 = load(b + 48)
                var x = splat(a0[c])
                c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
                c02 = c02.addingProduct(x, b2); c03 = c03.addingProduct(x, b3)
                x = splat(a1[c])
                c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
                c12 = c12.addingProduct(x, b2); c13 = c13.addingProduct(x, b3)
                x = splat(a2[c])
                c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
                c22 = c22.addingProduct(x, b2); c23 = c23.addingProduct(x, b3)
                x = splat(a3[c])
                c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
                c32 = c32.addingProduct(x, b2); c33 = c33.addingProduct(x, b3)
            }
            let al = splat(alpha)
            var r = s + i * lds
            store(c00 * al, r); store(c01 * al, r + 16); store(c02 * al, r + 32); store(c03 * al, r + 48); r += lds
            store(c10 * al, r); store(c11 * al, r + 16); store(c12 * al, r + 32); store(c13 * al, r + 48); r += lds
            store(c20 * al, r); store(c21 * al, r + 16); store(c22 * al, r + 32); store(c23 * al, r + 48); r += lds
            store(c30 * al, r); store(c31 * al, r + 16); store(c32 * al, r + 32); store(c33 * al, r + 48)
            i += 4
        }
        while i < m {
            let a0 = a + i * lda
            var c0 = Lanes16(), c1 = Lanes16(), c2 = Lanes16(), c3 = Lanes16()
            for c in 0..<d {
                let b = bt + c * ldb, x = splat(a0[c])
                c0 = c0.addingProduct(x, load(b)); c1 = c1.addingProduct(x, load(b + 16))
                c2 = c2.addingProduct(x, load(b + 32)); c3 = c3.addingProduct(x, load(b + 48))
            }
            let al = splat(alpha), r = s + i * lds
            store(c0 * al, r); store(c1 * al, r + 16); store(c2 * al, r + 32); store(c3 * al, r + 48)
            i += 1
        }
    }

    /// `scores` on 16 columns with AVX2's 6 × 16 tiles.
    static func narrowScores(m: Int, d: Int, alpha: Float, _ a: UnsafePointer<Float>, lda: Int,
                             _ bt: UnsafePointer<Float>, ldb: Int, _ s: UnsafeMutablePointer<Float>, lds: Int) {
        let al = splat(alpha)
        var i = 0
        while i + 6 <= m {
            let a0 = a + i * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda
            var c0 = Lanes16(), c1 = Lanes16(), c2 = Lanes16(), c3 = Lanes16(), c4 = Lanes16(), c5 = Lanes16()
            for c in 0..<d {
                let b = load(bt + c * ldb)
                c0 = c0.addingProduct(splat(a0[c]), b); c1 = c1.addingProduct(splat(a1[c]), b)
                c2 = c2.addingProduct(splat(a2[c]), b); c3 = c3.addingProduct(splat(a3[c]), b)
                c4 = c4.addingProduct(splat(a4[c]), b); c5 = c5.addingProduct(splat(a5[c]), b)
            }
            let r = s + i * lds
            store(c0 * al, r); store(c1 * al, r + lds); store(c2 * al, r + 2 * lds)
            store(c3 * al, r + 3 * lds); store(c4 * al, r + 4 * lds); store(c5 * al, r + 5 * lds)
            i += 6
        }
        while i < m {
            let a0 = a + i * lda
            var c0 = Lanes16()
            for c in 0..<d { c0 = c0.addingProduct(splat(a0[c]), load(bt + c * ldb)) }
            store(c0 * al, s + i * lds)
            i += 1
        }
    }

    /// C[i, 0..<d] += Σ_{j<n} P[i, j] · B[j, 0..<d] for i < m, where P[i, j] = p[i·ldp + j·pcs]
    /// (pcs = 1: row-major P; ldp = 1: P stored transposed), B row stride ldb, C row stride ldc;
    /// d a multiple of 16.
    static func accumulateRows(m: Int, n: Int, d: Int, _ p: UnsafePointer<Float>, ldp: Int, pcs: Int = 1,
                               _ b: UnsafePointer<Float>, ldb: Int, _ cm: UnsafeMutablePointer<Float>, ldc: Int) {
        guard wide else {
            for col in stride(from: 0, to: d, by: 16) {
                narrowAccumulateRows(m: m, n: n, p, ldp: ldp, pcs: pcs, b + col, ldb: ldb, cm + col, ldc: ldc)
            }
            return
        }
        var col = 0
        while col + 64 <= d {
            var i = 0
            while i + 4 <= m {
                let p0 = p + i * ldp, p1 = p0 + ldp, p2 = p1 + ldp, p3 = p2 + ldp
                let r0 = cm + i * ldc + col, r1 = r0 + ldc, r2 = r1 + ldc, r3 = r2 + ldc
                var c00 = load(r0), c01 = load(r0 + 16), c02 = load(r0 + 32), c03 = load(r0 + 48)
                var c10 = load(r1), c11 = load(r1 + 16), c12 = load(r1 + 32), c13 = load(r1 + 48)
                var c20 = load(r2), c21 = load(r2 + 16), c22 = load(r2 + 32), c23 = load(r2 + 48)
                var c30 = load(r3), c31 = load(r3 + 16), c32 = load(r3 + 32), c33 = load(r3 + 48)
                for j in 0..<n {
                    let br = b + j * ldb + col, pj = j * pcs
                    let b0 = load(br), b1 = load(br + 16), b2 = load(br + 32), b3 = load(br + 48)
                    var x = splat(p0[pj])
                    c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
                    c02 = c02.addingProduct(x, b2); c03 = c03.addingProduct(x, b3)
                    x = splat(p1[pj])
                    c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
                    c12 = c12.addingProduct(x, b2); c13 = c13.addingProduct(x, b3)
                    x = splat(p2[pj])
                    c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
                    c22 = c22.addingProduct(x, b2); c23 = c23.addingProduct(x, b3)
                    x = splat(p3[pj])
                    c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
                    c32 = c32.addingProduct(x, b2); c33 = c33.addingProduct(x, b3)
                }
                store(c00, r0); store(c01, r0 + 16); store(c02, r0 + 32); store(c03, r0 + 48)
                store(c10, r1); store(c11, r1 + 16); store(c12, r1 + 32); store(c13, r1 + 48)
                store(c20, r2); store(c21, r2 + 16); store(c22, r2 + 32); store(c23, r2 + 48)
                store(c30, r3); store(c31, r3 + 16); store(c32, r3 + 32); store(c33, r3 + 48)
                i += 4
            }
            while i < m {
                accumulateRow(n: n, col: col, width: 64, p + i * ldp, pcs: pcs, b, ldb: ldb, cm + i * ldc + col)
                i += 1
            }
            col += 64
        }
        while col < d {   // remaining 16-wide columns (d = 16, 32, 48, 80, …)
            for i in 0..<m {
                accumulateRow(n: n, col: col, width: 16, p + i * ldp, pcs: pcs, b, ldb: ldb, cm + i * ldc + col)
            }
            col += 16
        }
    }

    /// `accumulateRows` on 16 columns with AVX2's 6 × 16 tiles.
    static func narrowAccumulateRows(m: Int, n: Int, _ p: UnsafePointer<Float>, ldp: Int, pcs: Int,
                                     _ b: UnsafePointer<Float>, ldb: Int, _ cm: UnsafeMutablePointer<Float>, ldc: Int) {
        var i = 0
        while i + 6 <= m {
            let p0 = p + i * ldp, p1 = p0 + ldp, p2 = p1 + ldp, p3 = p2 + ldp, p4 = p3 + ldp, p5 = p4 + ldp
            let r = cm + i * ldc
            var c0 = load(r), c1 = load(r + ldc), c2 = load(r + 2 * ldc)
            var c3 = load(r + 3 * ldc), c4 = load(r + 4 * ldc), c5 = load(r + 5 * ldc)
            for j in 0..<n {
                let bj = load(b + j * ldb), pj = j * pcs
                c0 = c0.addingProduct(splat(p0[pj]), bj); c1 = c1.addingProduct(splat(p1[pj]), bj)
                c2 = c2.addingProduct(splat(p2[pj]), bj); c3 = c3.addingProduct(splat(p3[pj]), bj)
                c4 = c4.addingProduct(splat(p4[pj]), bj); c5 = c5.addingProduct(splat(p5[pj]), bj)
            }
            store(c0, r); store(c1, r + ldc); store(c2, r + 2 * ldc)
            store(c3, r + 3 * ldc); store(c4, r + 4 * ldc); store(c5, r + 5 * ldc)
            i += 6
        }
        while i < m {
            accumulateRow(n: n, col: 0, width: 16, p + i * ldp, pcs: pcs, b, ldb: ldb, cm + i * ldc)
            i += 1
        }
    }

    @inline(__always)
    static func accumulateRow(n: Int, col: Int, width: Int, _ p: UnsafePointer<Float>, pcs: Int,
                              _ b: UnsafePointer<Float>, ldb: Int, _ r: UnsafeMutablePointer<Float>) {
        var v = 0
        while v < width {
            var c = load(r + v)
            for j in 0..<n { c = c.addingProduct(splat(p[j * pcs]), load(b + j * ldb + col + v)) }
            store(c, r + v)
            v += 16
        }
    }

    /// dst[j, i] = src[i, j] for a rows × cols block.
    static func transpose(_ src: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int,
                          _ dst: UnsafeMutablePointer<Float>, ldd: Int) {
        for i in 0..<rows { for j in 0..<cols { dst[j * ldd + i] = src[i * ld + j] } }
    }
}
