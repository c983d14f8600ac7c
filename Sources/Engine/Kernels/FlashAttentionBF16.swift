import CKernels
import Foundation

/// The fused attention with its five block products in bf16 (docs/CONVENTIONS.md §15): `FlashAttention`'s
/// algorithm, tasks, masks and fp32 online softmax, with Q·Kᵀ, P·V, dO·Vᵀ, Pᵀ·dO, dS·K and dSᵀ·Q read as bf16
/// pairs by the AVX512-BF16 micro-kernels of `CKernels` (fp32 accumulation). q, k, v and dO are rounded to bf16 once
/// per call into the packed layouts the kernels read; P and dS are rounded block by block. Used with
/// `model.compute_dtype: bf16` on CPUs with AVX512-BF16 when the head dimension is a multiple of 16
/// (`FlashAttentionBF16.applies`); everywhere else attention runs in fp32.
public enum FlashAttentionBF16 {
    /// Whether bf16 attention runs for this head dimension on this CPU.
    public static func applies(headDim: Int) -> Bool { hardware && headDim % 16 == 0 && FlashAttention.blockQ == 64 }

    static let hardware = lt_cpu_has_avx512_bf16() != 0

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

    /// out [T, Hq·D] and lse [Hq, T] as `FlashAttention.forward` (queryStart 0).
    static func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                        shape: FlashAttention.Shape, layout: AttentionLayout,
                        out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        let tasks = FlashAttention.forwardTasks(layout)
        let t = shape.length, d = shape.headDim, d2 = d / 2, ldq = shape.ldq, ldk = shape.ldk
        let blockQ = FlashAttention.blockQ, blockK = FlashAttention.blockK, ldt = t + blockK
        let kRows = rowWords(k, rows: t, ld: ldk)
        let qT = transposedWords(rowWords(q, rows: t, ld: ldq), length: t, heads: shape.heads, headDim: d, ldt: ldt)
        let vPairs = [0, 1].map { rowPairs(v, length: t, ld: ldk, parity: $0) }
        let lanes = (0..<4).map { vi in Lanes16((0..<16).map { Float(16 * vi + $0) }) }
        withExtendedLifetime((kRows, qT, vPairs)) {
            Parallel.forEach(tasks.count) { ti in
                let task = tasks[ti]
                let nq = task.rows.count, q0 = task.rows.lowerBound, h = task.head, kvh = shape.kvHead(h)
                let st = UnsafeMutablePointer<Float>.allocate(capacity: blockK * blockQ)   // Sᵀ, then Pᵀ   [nk, 64]
                let pw = Words.allocate(capacity: blockK / 2 * blockQ)                    // P pairs  [nk/2, 64]
                let acc = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * d)      // [nq, d]
                defer { st.deallocate(); pw.deallocate(); acc.deallocate() }
                acc.initialize(repeating: 0, count: nq * d)
                var m = [Lanes16](repeating: Lanes16(repeating: -.infinity), count: 4)
                var l = [Lanes16](repeating: Lanes16(), count: 4)
                var alpha = [Float](repeating: 0, count: blockQ)
                for k0 in stride(from: task.segment.lowerBound, to: task.rows.upperBound, by: blockK) {
                    let nk = min(blockK, task.rows.upperBound - k0)
                    // Sᵀ = scale · K Qᵀ   [nk, 64]
                    lt_bf16_scores64(Int32(nk), Int32(d2), shape.scale, kRows.words + k0 * (ldk / 2) + kvh * d2,
                                     ldk / 2, qT.words + h * d2 * ldt + q0, ldt, st, blockQ)
                    if k0 + nk - 1 > q0 {   // causal mask, as in FlashAttention.forward
                        for j in 0..<nk {
                            let first = Lanes16(repeating: Float(k0 + j - q0)), row = st + j * blockQ
                            for vi in 0..<4 {
                                Micro.store(
                                    Micro.load(row + 16 * vi).replacing(with: -.infinity, where: lanes[vi] .< first),
                                    row + 16 * vi)
                            }
                        }
                    }
                    for vi in 0..<4 {
                        var mNew = m[vi]
                        for j in 0..<nk { mNew = vmax(mNew, Micro.load(st + j * blockQ + 16 * vi)) }
                        let scaleOld = fastExp(m[vi] - mNew)
                        let sum = Softmax.expShiftLanes(st + 16 * vi, stride: blockQ, count: nk, shift: mNew)
                        l[vi] = sum.addingProduct(l[vi], scaleOld)
                        m[vi] = mNew
                        for c in 0..<16 { alpha[16 * vi + c] = scaleOld[c] }
                    }
                    for i in 0..<nq where alpha[i] != 1 {
                        let av = Lanes16(repeating: alpha[i]), row = acc + i * d
                        var c = 0
                        while c < d { Micro.store(Micro.load(row + c) * av, row + c); c += 16 }
                    }
                    // acc += P V: P's key pairs are Pᵀ's row pairs.
                    pairRows(st, count: nk, width: blockQ, into: pw)
                    lt_bf16_accumulate(Int32(nq), Int32((nk + 1) / 2), Int32(d), pw, 1, blockQ,
                                       vPairs[k0 & 1].words + (k0 >> 1) * ldk + kvh * d, ldk, acc, d)
                }
                for i in 0..<nq {
                    let mi = m[i / 16][i % 16], li = l[i / 16][i % 16]
                    let inv = 1 / li
                    let o = out + (q0 + i) * ldq + h * d, a = acc + i * d
                    for c in 0..<d { o[c] = a[c] * inv }
                    lse[h * t + q0 + i] = mi + log(li)
                }
            }
        }
    }

    /// words[q·width + x] pairs rows 2q and 2q + 1 of x [count, width] (a missing last row: zeros).
    @inline(__always)
    static func pairRows(_ x: UnsafePointer<Float>, count: Int, width: Int, into words: Words) {
        for q in 0..<(count + 1) / 2 {
            lt_bf16_pair_rows(x + 2 * q * width, 2 * q + 1 < count ? x + (2 * q + 1) * width : nil, Int32(width),
                              words + q * width)
        }
    }

    /// dq, dk, dv as `FlashAttention.backward`.
    static func backward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                         out: UnsafePointer<Float>, lse: UnsafePointer<Float>, dout: UnsafePointer<Float>,
                         shape: FlashAttention.Shape, layout: AttentionLayout,
                         dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?,
                         dv: UnsafeMutablePointer<Float>?) {
        let d = shape.headDim, d2 = d / 2, ldq = shape.ldq, ldk = shape.ldk, t = shape.length
        let blockQ = FlashAttention.blockQ, blockK = FlashAttention.blockK, ldt = t + blockK, ldS = blockK
        let group = shape.heads / shape.kvHeads
        let expanded = group > 1 && (dk != nil || dv != nil)
        let dkScratch = expanded && dk != nil ? Tensor(zeros: [t, ldq]) : nil
        let dvScratch = expanded && dv != nil ? Tensor(zeros: [t, ldq]) : nil
        let dkx = expanded ? dkScratch?.data : dk
        let dvx = expanded ? dvScratch?.data : dv
        let ldx = expanded ? ldq : ldk

        let qRows = rowWords(q, rows: t, ld: ldq), doRows = rowWords(dout, rows: t, ld: ldq)
        let kT = transposedWords(rowWords(k, rows: t, ld: ldk), length: t, heads: shape.kvHeads, headDim: d, ldt: ldt)
        let vT = transposedWords(rowWords(v, rows: t, ld: ldk), length: t, heads: shape.kvHeads, headDim: d, ldt: ldt)
        let doPairs = [0, 1].map { rowPairs(dout, length: t, ld: ldq, parity: $0) }
        let kPairs = [0, 1].map { rowPairs(k, length: t, ld: ldk, parity: $0) }
        let qPairs = [0, 1].map { rowPairs(q, length: t, ld: ldq, parity: $0) }

        var tasks: [(head: Int, segment: Range<Int>)] = []
        for g in layout.groups { for h in g.heads { for s in g.segments { tasks.append((h, s)) } } }
        tasks.sort { $0.segment.count > $1.segment.count }

        withExtendedLifetime((dkScratch, dvScratch, qRows, doRows, kT, vT, doPairs, kPairs, qPairs)) {
            Parallel.forEach(tasks.count) { ti in
                let (h, seg) = tasks[ti]
                let kvh = shape.kvHead(h)
                let p = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * ldS)
                let dp = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * ldS)
                let rowPairWords = Words.allocate(capacity: blockQ / 2 * ldS)   // pairs of rows of P or dS
                let colPairWords = Words.allocate(capacity: blockQ * ldS / 2)   // dS's key pairs  [nq, 32]
                let delta = UnsafeMutablePointer<Float>.allocate(capacity: seg.count)
                defer {
                    p.deallocate(); dp.deallocate(); rowPairWords.deallocate(); colPairWords.deallocate()
                    delta.deallocate()
                }
                for r in seg {   // Δ_i = Σ_c dO_ic · O_ic, in fp32
                    let o = out + r * ldq + h * d, g = dout + r * ldq + h * d
                    var acc: Float = 0
                    for c in 0..<d { acc = acc.addingProduct(o[c], g[c]) }
                    delta[r - seg.lowerBound] = acc
                }
                for k0 in stride(from: seg.lowerBound, to: seg.upperBound, by: blockK) {
                    let nk = min(blockK, seg.upperBound - k0)
                    let dkp = dkx.map { $0 + k0 * ldx + (expanded ? h : kvh) * d }
                    let dvp = dvx.map { $0 + k0 * ldx + (expanded ? h : kvh) * d }
                    for q0 in stride(from: k0 - (k0 - seg.lowerBound) % blockQ, to: seg.upperBound, by: blockQ) {
                        let nq = min(blockQ, seg.upperBound - q0)
                        if q0 + nq <= k0 { continue }
                        // P = exp(scale · Q Kᵀ − lse)   [nq, 64]
                        lt_bf16_scores64(Int32(nq), Int32(d2), shape.scale, qRows.words + q0 * (ldq / 2) + h * d2,
                                         ldq / 2, kT.words + kvh * d2 * ldt + k0, ldt, p, ldS)
                        for i in 0..<nq {
                            let row = p + i * ldS
                            let visible = min(nk, q0 + i - k0 + 1)
                            for j in max(visible, 0)..<ldS { row[j] = -.infinity }
                            Softmax.expShiftInPlace(row, ldS, shift: lse[h * t + q0 + i])
                        }
                        // dV += Pᵀ dO   [nk, d]: reduction over queries, P's row pairs.
                        if let dvp {
                            pairRows(p, count: nq, width: ldS, into: rowPairWords)
                            lt_bf16_accumulate(Int32(nk), Int32((nq + 1) / 2), Int32(d), rowPairWords, 1, ldS,
                                               doPairs[q0 & 1].words + (q0 >> 1) * ldq + h * d, ldq, dvp, ldx)
                        }
                        // dP = dO Vᵀ   [nq, nk]
                        lt_bf16_scores64(Int32(nq), Int32(d2), 1, doRows.words + q0 * (ldq / 2) + h * d2, ldq / 2,
                                         vT.words + kvh * d2 * ldt + k0, ldt, dp, ldS)
                        // dS = scale · P ⊙ (dP − Δ)
                        for i in 0..<nq {
                            Softmax.scoreGrad(p: p + i * ldS, dp: dp + i * ldS, ldS,
                                              delta: delta[q0 + i - seg.lowerBound], scale: shape.scale)
                        }
                        // dQ += dS K: reduction over keys, dS's rows in bf16 (pairs of consecutive keys).
                        if let dq {
                            BF16.encodeRows(dp, rows: nq, columns: ldS, into: colPairWords)
                            lt_bf16_accumulate(Int32(nq), Int32((nk + 1) / 2), Int32(d), colPairWords, ldS / 2, 1,
                                               kPairs[k0 & 1].words + (k0 >> 1) * ldk + kvh * d, ldk,
                                               dq + q0 * ldq + h * d, ldq)
                        }
                        // dK += dSᵀ Q: reduction over queries, dS's row pairs.
                        if let dkp {
                            pairRows(dp, count: nq, width: ldS, into: rowPairWords)
                            lt_bf16_accumulate(Int32(nk), Int32((nq + 1) / 2), Int32(d), rowPairWords, 1, ldS,
                                               qPairs[q0 & 1].words + (q0 >> 1) * ldq + h * d, ldq, dkp, ldx)
                        }
                    }
                }
            }
        }
        if expanded {
            Parallel.chunks(t, minChunk: 64) { rows in
                for r in rows { for kvh in 0..<shape.kvHeads { for g in 0..<group {
                    let src = r * ldq + (kvh * group + g) * d, dst = r * ldk + kvh * d
                    if let dk, let dkx { for c in 0..<d { dk[dst + c] += dkx[src + c] } }
                    if let dv, let dvx { for c in 0..<d { dv[dst + c] += dvx[src + c] } }
                } } }
            }
        }
    }
}

extension BF16 {
    /// rows × columns floats (row stride `columns`) in bf16, written as words of consecutive pairs (single-threaded,
    /// for one block).
    @inline(__always)
    static func encodeRows(_ x: UnsafePointer<Float>, rows: Int, columns: Int, into words: UnsafeMutablePointer<UInt32>) {
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
