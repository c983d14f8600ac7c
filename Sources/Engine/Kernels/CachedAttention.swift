/// Attention of a chunk of new tokens over a key/value cache, forward only: generation (prefill in
/// chunks, then one token at a time) and streaming evaluation (docs/CONVENTIONS.md §11).
///
/// The cache holds tokens of one stream: the first few (attention sinks) in rows 0…, and consecutive
/// tokens from `windowStart` on in rows from `windowRow`, the chunk's own included. Query i (a stream
/// index) sees sink token j when j ≤ i, and window token a when a ≤ i and, with a window W, a ≥ i − W.
/// Keys arrive rotated (RoPE) by the caller; queries come in two rotations because the sinks and the window are
/// seen from different positions once tokens have been evicted (§11): `qWindow` for window keys and `qSinks`
/// (nil: the same) for sink keys.
/// Layout: q and out [queries, H·D], keys and values [rows, Hkv·D].
public enum CachedAttention {
    public struct Shape {
        public let heads, kvHeads, headDim: Int
        public let scale: Float
        public init(heads: Int, kvHeads: Int, headDim: Int, scale: Float) {
            self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.scale = scale
        }
        var ldq: Int { heads * headDim }
        var ldk: Int { kvHeads * headDim }
        var group: Int { heads / kvHeads }
    }

    /// Which cache rows hold which stream tokens, and which tokens the queries are.
    public struct Span {
        public let sinkRows: Int       // rows [0, sinkRows) hold stream tokens 0..<sinkRows
        public let windowRow: Int      // rows [windowRow, windowRow + windowRows) hold tokens windowStart…
        public let windowRows: Int
        public let windowStart: Int
        public let queryStart: Int     // the chunk: stream tokens queryStart..<queryStart + queries
        public let queries: Int
        public let window: Int?        // W: a query sees at most the W tokens before it besides the sinks
        public init(sinkRows: Int, windowRow: Int, windowRows: Int, windowStart: Int, queryStart: Int, queries: Int,
                    window: Int?) {
            self.sinkRows = sinkRows; self.windowRow = windowRow; self.windowRows = windowRows
            self.windowStart = windowStart; self.queryStart = queryStart; self.queries = queries; self.window = window
        }
        /// The window part's columns (0-based within it) query r sees.
        func windowColumns(query r: Int) -> Range<Int> {
            let i = queryStart + r
            let first = max(windowStart, window.map { i - $0 } ?? windowStart)
            let lo = first - windowStart, hi = min(windowRows, i - windowStart + 1)
            return lo..<max(lo, hi)
        }
        /// The sink rows query r sees.
        func sinkColumns(query r: Int) -> Range<Int> { 0..<min(sinkRows, queryStart + r + 1) }
    }

    /// out = softmax(scale · q Kᵀ, masked as above) V, per query head.
    public static func forward(qWindow: UnsafePointer<Float>, qSinks: UnsafePointer<Float>?,
                               keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                               shape: Shape, span: Span, out: UnsafeMutablePointer<Float>) {
        if span.queries == 1 && shape.headDim % 16 == 0 {
            return forwardOneQuery(qWindow: qWindow, qSinks: qSinks, keys: keys, values: values, shape: shape,
                                   span: span, out: out)
        }
        if span.window == nil && span.sinkRows == 0 && span.windowRow == 0 && span.windowStart == 0 {
            // A plain cache holds tokens 0..<T in rows 0..<T: the chunk is the last rows of causal attention.
            let t = span.queryStart + span.queries
            let lse = UnsafeMutablePointer<Float>.allocate(capacity: shape.heads * span.queries)
            defer { lse.deallocate() }
            FlashAttention.forward(
                q: qWindow, k: keys, v: values,
                shape: .init(length: t, heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                             scale: shape.scale),
                layout: .causal(length: t, heads: shape.heads), out: out, lse: lse, queryStart: span.queryStart)
            return
        }
        let d = shape.headDim, ns = span.sinkRows, nw = span.windowRows, n = ns + nw
        // One query (decoding): the heads of a KV group share every key, so they are the rows of one
        // product [group, D] · Kᵀ and K is read once per group. Several queries: one head at a time.
        let oneQuery = span.queries == 1
        let tasks = oneQuery ? shape.kvHeads : shape.heads
        let rows = oneQuery ? shape.group : span.queries
        let ldRows = oneQuery ? d : shape.ldq   // stride between the product's rows in q and out
        let ldk = shape.ldk
        Parallel.withSingleThreadedBLAS {
            Parallel.forEach(tasks) { task in
                let head = oneQuery ? task * shape.group : task
                let kvh = oneQuery ? task : head / shape.group
                // Scores [rows, sinks | window], rows padded to whole vectors (the exponential runs
                // 16 lanes at a time).
                let lds = (n + 15) / 16 * 16
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: rows * lds)
                defer { scores.deallocate() }
                let sinkK = keys + kvh * d, sinkV = values + kvh * d
                let windowK = sinkK + span.windowRow * ldk, windowV = sinkV + span.windowRow * ldk
                BLAS.gemm(transB: true, m: rows, n: ns, k: d, alpha: shape.scale,
                          (qSinks ?? qWindow) + head * d, lda: ldRows, sinkK, ldb: ldk, scores, ldc: lds)
                BLAS.gemm(transB: true, m: rows, n: nw, k: d, alpha: shape.scale,
                          qWindow + head * d, lda: ldRows, windowK, ldb: ldk, scores + ns, ldc: lds)
                var inverseSums = [Float](repeating: 0, count: rows)
                for r in 0..<rows {
                    let q = oneQuery ? 0 : r
                    let w = span.windowColumns(query: q), window = (ns + w.lowerBound)..<(ns + w.upperBound)
                    inverseSums[r] = softmaxVisible(scores + r * lds, count: n, padded: lds,
                                                    sinks: span.sinkColumns(query: q), window: window)
                }
                let o = out + head * d
                BLAS.gemm(m: rows, n: d, k: ns, scores, lda: lds, sinkV, ldb: ldk, o, ldc: ldRows)
                BLAS.gemm(m: rows, n: d, k: nw, scores + ns, lda: lds, windowV, ldb: ldk, beta: ns > 0 ? 1 : 0,
                          o, ldc: ldRows)
                for r in 0..<rows { for c in 0..<d { o[r * ldRows + c] *= inverseSums[r] } }
            }
        }
    }

    /// One query (decoding a token), flash-decoding style: the visible keys are split into blocks; a
    /// task scores every query head against its block's keys with SIMD dot products, reading each cache
    /// row once and in order (no packing), keeps per head the block's max, sum of exponentials and
    /// weighted values, and the blocks are merged at the end. Head dimension a multiple of 16.
    static func forwardOneQuery(qWindow: UnsafePointer<Float>, qSinks: UnsafePointer<Float>?,
                                keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                                shape: Shape, span: Span, out: UnsafeMutablePointer<Float>) {
        let d = shape.headDim, ldk = shape.ldk, heads = shape.heads, group = shape.group, vectors = d / 16
        let sinks = span.sinkColumns(query: 0), window = span.windowColumns(query: 0)
        let visible = sinks.count + window.count
        // Visible key c: the sinks first, then the window rows.
        let firstWindowRow = span.windowRow + window.lowerBound
        @inline(__always) func row(_ c: Int) -> Int { c < sinks.count ? c : firstWindowRow + c - sinks.count }
        let blocks = max(1, min(visible / 128, 4 * Parallel.threads))
        let stride = heads * (d + 2)             // per block and head: max, sum, d weighted values
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: blocks * stride)
        defer { partial.deallocate() }
        Parallel.forEach(blocks) { b in
            let lo = visible * b / blocks, hi = visible * (b + 1) / blocks, n = hi - lo
            let lds = (n + 15) / 16 * 16
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: heads * lds)      // [heads, keys of the block]
            let acc = UnsafeMutablePointer<Lanes16>.allocate(capacity: heads * vectors)
            defer { scores.deallocate(); acc.deallocate() }
            for c in lo..<hi {
                let k = keys + row(c) * ldk
                let q = c < sinks.count ? (qSinks ?? qWindow) : qWindow
                for h in 0..<heads {
                    let qh = q + h * d, kh = k + (h / group) * d
                    var even = Lanes16(), odd = Lanes16()
                    var v = 0
                    while v + 1 < vectors {
                        even = even.addingProduct(Micro.load(qh + 16 * v), Micro.load(kh + 16 * v))
                        odd = odd.addingProduct(Micro.load(qh + 16 * v + 16), Micro.load(kh + 16 * v + 16))
                        v += 2
                    }
                    if v < vectors { even = even.addingProduct(Micro.load(qh + 16 * v), Micro.load(kh + 16 * v)) }
                    scores[h * lds + c - lo] = horizontalSum(even + odd) * shape.scale
                }
            }
            var maxima = [Float](repeating: -.infinity, count: heads), sums = [Float](repeating: 0, count: heads)
            for h in 0..<heads {
                let s = scores + h * lds
                for j in 0..<n { maxima[h] = max(maxima[h], s[j]) }
                for j in n..<lds { s[j] = -.infinity }
                Softmax.expShiftInPlace(s, n, shift: maxima[h])
                for j in 0..<n { sums[h] += s[j] }
            }
            acc.initialize(repeating: Lanes16(), count: heads * vectors)
            for c in lo..<hi {
                let v = values + row(c) * ldk
                for h in 0..<heads {
                    let p = Lanes16(repeating: scores[h * lds + c - lo]), vh = v + (h / group) * d
                    let a = acc + h * vectors
                    for e in 0..<vectors { a[e] = a[e].addingProduct(p, Micro.load(vh + 16 * e)) }
                }
            }
            for h in 0..<heads {
                let o = partial + b * stride + h * (d + 2)
                o[0] = maxima[h]; o[1] = sums[h]
                for e in 0..<vectors { Micro.store(acc[h * vectors + e], o + 2 + 16 * e) }
            }
        }
        // Merge the blocks: softmax over all = Σ_b e^(m_b − M) · (weighted values)_b / Σ_b e^(m_b − M) · sum_b.
        for h in 0..<heads {
            let parts = (0..<blocks).map { partial + $0 * stride + h * (d + 2) }
            let top = parts.map { $0[0] }.max()!
            let o = out + h * d
            o.update(repeating: 0, count: d)
            var total: Float = 0
            for p in parts where p[0] > -.infinity {
                let w = fastExp(p[0] - top)
                total += w * p[1]
                for e in 0..<d { o[e] += w * p[2 + e] }
            }
            for e in 0..<d { o[e] /= total }
        }
    }

    @inline(__always) static func horizontalSum(_ v: Lanes16) -> Float {
        let h8 = v.lowHalf + v.highHalf, h4 = h8.lowHalf + h8.highHalf, h2 = h4.lowHalf + h4.highHalf
        return h2[0] + h2[1]
    }

    /// Unnormalized softmax over the visible columns of one row of scores (the others become 0);
    /// returns 1 / the sum of the kept exponentials. The row has `padded` ≥ n writable entries.
    static func softmaxVisible(_ row: UnsafeMutablePointer<Float>, count n: Int, padded: Int, sinks: Range<Int>,
                               window: Range<Int>) -> Float {
        var m = -Float.infinity
        for j in sinks { m = max(m, row[j]) }
        for j in window { m = max(m, row[j]) }
        for j in 0..<padded where !sinks.contains(j) && !window.contains(j) { row[j] = -.infinity }
        Softmax.expShiftInPlace(row, n, shift: m)
        var sum: Float = 0
        for j in 0..<n { sum += row[j] }
        return 1 / sum
    }
}
