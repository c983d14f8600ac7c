import CKernels
import Foundation

/// The fused attention with its block products in bf16 (docs/CONVENTIONS.md §15): `FlashAttention`'s algorithm,
/// tasks, masks and fp32 online softmax around `BF16BlockProducts`, whose Q·Kᵀ, P·V, dO·Vᵀ, Pᵀ·dO, dS·K and
/// dSᵀ·Q the AVX512-BF16 micro-kernels of `CKernels` read as bf16 pairs (fp32 accumulation). Used with
/// `model.compute_dtype: bf16` on CPUs with AVX512-BF16 when the head dimension is a multiple of 16
/// (`FlashAttentionBF16.applies`); everywhere else attention runs in fp32. This enum holds the packing.
public enum FlashAttentionBF16 {
    /// Whether bf16 attention runs for this head dimension on this CPU.
    public static func applies(headDim: Int) -> Bool { hardware && headDim % 16 == 0 && FlashAttention.blockQ == 64 }

    static let hardware = CPU.hasAVX512BF16 && lt_cpu_has_avx512_bf16() != 0

    typealias Words = UnsafeMutablePointer<UInt32>

    /// 32-bit words in a tensor's memory (so the memory counter sees them).
    struct Packed {
        let storage: Tensor
        var words: Words { UnsafeMutableRawPointer(storage.data).assumingMemoryBound(to: UInt32.self) }
        init(count: Int) { storage = Tensor(uninitialized: [max(count, 1)]) }
    }

    /// x [T, ld] in bf16, read as words: word p of row r pairs columns 2p, 2p+1 ([T, ld/2]).
    static func rowWords(_ x: UnsafePointer<Float>, rows: Int, ld: Int) -> Packed {
        let out = Packed(count: rows * ld / 2)
        let bits = UnsafeMutableRawPointer(out.words).assumingMemoryBound(to: UInt16.self)
        BF16.encode(x, bits, count: rows * ld)
        return out
    }

    /// Per head h, the word-transpose of x's pairs: [heads, d/2, ldt] with word (h, p, r) pairing x[r, h·d + 2p]
    /// and x[r, h·d + 2p + 1]; zero past T. The scores kernel reads 64 consecutive rows of one pair column.
    static func transposedWords(_ rows: Packed, length t: Int, heads: Int, headDim d: Int, ldt: Int) -> Packed {
        let d2 = d / 2, ldw = heads * d2
        let out = Packed(count: heads * d2 * ldt)
        let src = rows.words, dst = out.words
        Parallel.forEach(heads) { h in
            let base = dst + h * d2 * ldt
            for p in 0..<d2 { (base + p * ldt + t).update(repeating: 0, count: ldt - t) }
            for r in 0..<t { for p in 0..<d2 { base[p * ldt + r] = src[r * ldw + h * d2 + p] } }
        }
        return out
    }

    /// words[q·width + x] pairs rows 2q and 2q + 1 of x [count, width] (a missing last row: zeros).
    @inline(__always)
    static func pairRows(_ x: UnsafePointer<Float>, count: Int, width: Int, into words: Words) {
        for q in 0..<(count + 1) / 2 {
            lt_bf16_pair_rows(x + 2 * q * width, 2 * q + 1 < count ? x + (2 * q + 1) * width : nil, Int32(width),
                              words + q * width)
        }
    }

    /// Row pairs of x [T, ld] starting at row `parity`: word (q, c) pairs x[2q + parity, c] and x[2q + parity + 1, c]
    /// (zero past T), [T/2 + 1, ld]. A block starting at row r0 reads pairs from index r0 / 2 of parity r0 % 2.
    static func rowPairs(_ x: UnsafePointer<Float>, length t: Int, ld: Int, parity: Int) -> Packed {
        let pairs = t / 2 + 1
        let out = Packed(count: pairs * ld)
        let dst = out.words
        Parallel.chunks(pairs, minChunk: 64) { range in
            for q in range {
                let r = 2 * q + parity
                if r >= t { (dst + q * ld).update(repeating: 0, count: ld); continue }
                lt_bf16_pair_rows(x + r * ld, r + 1 < t ? x + (r + 1) * ld : nil, Int32(ld), dst + q * ld)
            }
        }
        return out
    }
}

/// bf16 block products (docs/CONVENTIONS.md §15): the AVX512-BF16 micro-kernels of `CKernels` on operands packed
/// once per pass (q, k, v and dO rounded to bf16 in the layouts the kernels read), with P and dS paired block by
/// block in the per-task scratch. Forward packs without `dout`, backward packs with it.
struct BF16BlockProducts: AttentionBlocks {
    typealias Packed = FlashAttentionBF16.Packed
    let d, d2, ldq, ldk, ldt: Int
    // Forward: K's rows, Qᵀ per head, V's row pairs (both parities).
    var kRows, qT: Packed?
    var vPairs: [Packed] = []
    // Backward: Q's and dO's rows, Kᵀ and Vᵀ per KV head, row pairs of dO, K and Q.
    var qRows, doRows, kT, vT: Packed?
    var doPairs: [Packed] = [], kPairs: [Packed] = [], qPairs: [Packed] = []

    init(shape: FlashAttention.Shape, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
         dout: UnsafePointer<Float>?) {
        typealias F = FlashAttentionBF16
        let t = shape.length, heads = shape.heads, kvHeads = shape.kvHeads
        d = shape.headDim; d2 = d / 2; ldq = shape.ldq; ldk = shape.ldk; ldt = t + FlashAttention.blockK
        if let dout {
            qRows = F.rowWords(q, rows: t, ld: ldq)
            doRows = F.rowWords(dout, rows: t, ld: ldq)
            kT = F.transposedWords(F.rowWords(k, rows: t, ld: ldk), length: t, heads: kvHeads, headDim: d, ldt: ldt)
            vT = F.transposedWords(F.rowWords(v, rows: t, ld: ldk), length: t, heads: kvHeads, headDim: d, ldt: ldt)
            doPairs = [0, 1].map { F.rowPairs(dout, length: t, ld: ldq, parity: $0) }
            kPairs = [0, 1].map { F.rowPairs(k, length: t, ld: ldk, parity: $0) }
            qPairs = [0, 1].map { F.rowPairs(q, length: t, ld: ldq, parity: $0) }
        } else {
            kRows = F.rowWords(k, rows: t, ld: ldk)
            qT = F.transposedWords(F.rowWords(q, rows: t, ld: ldq), length: t, heads: heads, headDim: d, ldt: ldt)
            vPairs = [0, 1].map { F.rowPairs(v, length: t, ld: ldk, parity: $0) }
        }
    }

    func release() {}   // the packs are tensors, freed with this value

    /// Words of P's or dS's pairs for one block: [32, 64] or [64, 32].
    var scratchCount: Int { FlashAttention.blockQ * FlashAttention.blockK / 2 }

    @inline(__always) func words(_ p: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: UInt32.self)
    }

    /// Row pair `first / 2` of parity `first % 2` in `pairs` (row stride ld), at column `column`.
    @inline(__always) func pairRow(_ pairs: [Packed], _ first: Int, ld: Int,
                                   column: Int) -> UnsafeMutablePointer<UInt32> {
        pairs[first & 1].words + (first >> 1) * ld + column
    }

    func beginQueryBlock(q0: Int, nq: Int, head: Int, scratch: UnsafeMutablePointer<Float>) {}

    func scoresTransposed(nk: Int, nq: Int, k0: Int, q0: Int, head: Int, kvHead: Int, alpha: Float,
                          scratch: UnsafeMutablePointer<Float>, _ st: UnsafeMutablePointer<Float>) {
        lt_bf16_scores64(Int32(nk), Int32(d2), alpha, kRows!.words + k0 * (ldk / 2) + kvHead * d2, ldk / 2,
                         qT!.words + head * d2 * ldt + q0, ldt, st, FlashAttention.blockQ)
    }

    /// P's key pairs are Pᵀ's row pairs.
    func accumulateValues(nq: Int, nk: Int, k0: Int, kvHead: Int, _ pt: UnsafePointer<Float>,
                          scratch: UnsafeMutablePointer<Float>, _ acc: UnsafeMutablePointer<Float>) {
        let w = FlashAttention.blockQ
        FlashAttentionBF16.pairRows(pt, count: nk, width: w, into: words(scratch))
        lt_bf16_accumulate(Int32(nq), Int32((nk + 1) / 2), Int32(d), words(scratch), 1, w,
                           pairRow(vPairs, k0, ld: ldk, column: kvHead * d), ldk, acc, d)
    }

    func scores(_ product: ScoreProduct, nq: Int, nk: Int, q0: Int, k0: Int, head: Int, kvHead: Int, alpha: Float,
                _ s: UnsafeMutablePointer<Float>) {
        let a = (product == .queryKey ? qRows : doRows)!.words + q0 * (ldq / 2) + head * d2
        let bt = (product == .queryKey ? kT : vT)!.words + kvHead * d2 * ldt + k0
        lt_bf16_scores64(Int32(nq), Int32(d2), alpha, a, ldq / 2, bt, ldt, s, FlashAttention.blockK)
    }

    /// A reduction over queries: P's (dS's) row pairs.
    func accumulateTransposed(_ x: QueryRows, nk: Int, nq: Int, q0: Int, head: Int, _ p: UnsafePointer<Float>,
                              scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        let w = FlashAttention.blockK
        FlashAttentionBF16.pairRows(p, count: nq, width: w, into: words(scratch))
        lt_bf16_accumulate(Int32(nk), Int32((nq + 1) / 2), Int32(d), words(scratch), 1, w,
                           pairRow(x == .query ? qPairs : doPairs, q0, ld: ldq, column: head * d), ldq, c, ldc)
    }

    /// A reduction over keys: dS's rows in bf16 are pairs of consecutive keys.
    func accumulateKeys(nq: Int, nk: Int, k0: Int, kvHead: Int, _ ds: UnsafePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        let w = FlashAttention.blockK
        BF16.encodeRows(ds, rows: nq, columns: w, into: words(scratch))
        lt_bf16_accumulate(Int32(nq), Int32((nk + 1) / 2), Int32(d), words(scratch), w / 2, 1,
                           pairRow(kPairs, k0, ld: ldk, column: kvHead * d), ldk, c, ldc)
    }
}

extension BF16 {
    /// rows × columns floats (row stride `columns`) in bf16, written as words of consecutive pairs (single-threaded,
    /// for one block).
    @inline(__always)
    static func encodeRows(_ x: UnsafePointer<Float>, rows: Int, columns: Int,
                           into words: UnsafeMutablePointer<UInt32>) {
        let bits = UnsafeMutableRawPointer(words).assumingMemoryBound(to: UInt16.self)
        var i = 0
        let n = rows * columns
        while i + 16 <= n {
            let x16 = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(bits + i).storeBytes(of: encode(x16), as: SIMD16<UInt16>.self)
            i += 16
        }
        while i < n { bits[i] = bf16Bits(x[i]); i += 1 }
    }
}
