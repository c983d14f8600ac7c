import Foundation

/// Fused causal attention with grouped-query heads over segment layouts, FlashAttention-2 style:
/// the forward pass streams key blocks with an online softmax and keeps only the output and one
/// log-sum-exp per query row; the backward pass recomputes scores block by block. Extra memory is
/// O(T·H·D) for key/value gradients, never O(T²). Blocks outside a segment are never visited.
///
/// Layout: q and the output are [T, Hq·D] (token rows, heads side by side), k and v [T, Hkv·D];
/// query head h reads key/value head h / (Hq / Hkv).
public enum FlashAttention {
    public static let blockQ = 64
    public static let blockK = 64

    /// Whether the fp32 block products use AVX-512's 4 × 64 register tiles (true where the CPU has AVX-512) or AVX2's
    /// 6 × 16 (`Micro`); the two give identical bits. Settable so that tests run both on any machine.
    public static var wideTiles: Bool {
        get { Micro.wide }
        set { Micro.wide = newValue }
    }

    public struct Shape {
        public let length, heads, kvHeads, headDim: Int
        public let scale: Float
        public init(length: Int, heads: Int, kvHeads: Int, headDim: Int, scale: Float) {
            self.length = length; self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.scale = scale
        }
        var ldq: Int { heads * headDim }
        var ldk: Int { kvHeads * headDim }
        func kvHead(_ h: Int) -> Int { h / (heads / kvHeads) }
    }

    /// One unit of parallel work: query head `head`, rows `rows` of segment `segment`.
    struct Task { let head: Int; let segment: Range<Int>; let rows: Range<Int> }

    /// Blocks of up to 64 query rows from `firstRow` on (the rows before are not computed).
    static func forwardTasks(_ layout: AttentionLayout, firstRow: Int = 0) -> [Task] {
        var tasks: [Task] = []
        for g in layout.groups { for h in g.heads { for s in g.segments where s.upperBound > firstRow {
            for q0 in stride(from: max(s.lowerBound, firstRow), to: s.upperBound, by: blockQ) {
                tasks.append(Task(head: h, segment: s, rows: q0..<min(q0 + blockQ, s.upperBound)))
            }
        } } }
        // Longest first (cost grows with the distance from the segment start) for load balance.
        return tasks.sorted {
            ($0.rows.upperBound - $0.segment.lowerBound) > ($1.rows.upperBound - $1.segment.lowerBound)
        }
    }

    /// out [T, Hq·D] and lse [Hq, T] (natural-log log-sum-exp of each query row's scaled scores).
    /// With `queryStart` s > 0 only the queries of rows s..<T are computed (a chunk after a KV cache
    /// of s tokens): q, out are then [T − s, Hq·D] and lse [Hq, T − s], while k and v hold all T rows.
    /// `bf16`: the block products in bf16 (`BF16BlockProducts`, docs/CONVENTIONS.md §15; queryStart 0 only).
    /// `keyOnlyRows` r: the queries of rows 0..<r are not needed (a sequence-parallel halo, §17): their output and
    /// lse rows are left unwritten (`Graph.attention` zeroes the output rows).
    public static func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                               shape: Shape, layout: AttentionLayout,
                               out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>, queryStart: Int = 0,
                               keyOnlyRows: Int = 0, bf16: Bool = false) {
        precondition(queryStart == 0 || keyOnlyRows == 0, "attention: a query start and key-only rows together")
        if bf16 {
            precondition(queryStart == 0 && FlashAttentionBF16.applies(headDim: shape.headDim), "bf16 attention")
            forward(BF16BlockProducts(shape: shape, q: q, k: k, v: v, dout: nil), shape: shape, layout: layout,
                    out: out, lse: lse, queryStart: 0, keyOnlyRows: keyOnlyRows)
        } else {
            forward(BlockProducts(shape: shape, q: q, k: k, v: v, dout: nil, queryStart: queryStart), shape: shape,
                    layout: layout, out: out, lse: lse, queryStart: queryStart, keyOnlyRows: keyOnlyRows)
        }
    }

    /// The forward pass around any block products.
    ///
    /// Scores are formed transposed, Sᵀ = K Qᵀ [keys, 64 queries], so that each SIMD lane holds one
    /// query: the running max, the rescale factors and the row sums are lane-wise vector operations
    /// with no horizontal reductions.
    static func forward<B: AttentionBlocks>(_ blocks: B, shape: Shape, layout: AttentionLayout,
                                            out: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                                            queryStart: Int, keyOnlyRows: Int) {
        precondition(blockQ == 64, "the forward's lane layout holds 64 queries in 4 vectors of 16")
        defer { blocks.release() }
        let tasks = forwardTasks(layout, firstRow: max(queryStart, keyOnlyRows))
        let queryRows = shape.length - queryStart
        let d = shape.headDim, ldq = shape.ldq
        let lanes = (0..<4).map { vi in Lanes16((0..<16).map { Float(16 * vi + $0) }) }   // query index of each lane
        Parallel.withSingleThreadedBLAS {
            Parallel.forEach(tasks.count) { ti in
                let task = tasks[ti]
                let nq = task.rows.count, q0 = task.rows.lowerBound, h = task.head
                let kvh = shape.kvHead(h)
                let st = UnsafeMutablePointer<Float>.allocate(capacity: blockK * blockQ)   // Sᵀ, then Pᵀ   [nk, 64]
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: blocks.scratchCount)
                let acc = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * d)       // [nq, d]
                defer { st.deallocate(); scratch.deallocate(); acc.deallocate() }
                st.initialize(repeating: 0, count: blockK * blockQ)
                acc.initialize(repeating: 0, count: nq * d)
                blocks.beginQueryBlock(q0: q0, nq: nq, head: h, scratch: scratch)
                var m = [Lanes16](repeating: Lanes16(repeating: -.infinity), count: 4)   // running max per query
                var l = [Lanes16](repeating: Lanes16(), count: 4)                         // running sum per query
                var alpha = [Float](repeating: 0, count: blockQ)
                // From the key block holding the first key the block's first query sees
                // (blocks aligned to the segment).
                let seg = task.segment, firstKey = layout.firstKey(query: q0, segment: seg)
                let kStart = seg.lowerBound + (firstKey - seg.lowerBound) / blockK * blockK
                for k0 in stride(from: kStart, to: task.rows.upperBound, by: blockK) {
                    let nk = min(blockK, task.rows.upperBound - k0)
                    // Sᵀ = scale · K Qᵀ   [nk, 64]
                    blocks.scoresTransposed(nk: nk, nq: nq, k0: k0, q0: q0, head: h, kvHead: kvh, alpha: shape.scale,
                                            scratch: scratch, st)
                    // Causal: key k0 + j is visible to query q0 + i when i ≥ k0 + j − q0.
                    if k0 + nk - 1 > q0 {
                        for j in 0..<nk {
                            let first = Lanes16(repeating: Float(k0 + j - q0)), row = st + j * blockQ
                            for vi in 0..<4 {
                                Micro.store(
                                    Micro.load(row + 16 * vi).replacing(with: -.infinity, where: lanes[vi] .< first),
                                    row + 16 * vi)
                            }
                        }
                    }
                    // Sliding window W: key k0 + j is visible to query q0 + i when i ≤ k0 + j + W − 1 − q0.
                    if let w = layout.window, k0 + w - 1 - q0 < nq - 1 {
                        for j in 0..<nk {
                            let last = Lanes16(repeating: Float(k0 + j + w - 1 - q0)), row = st + j * blockQ
                            for vi in 0..<4 {
                                Micro.store(
                                    Micro.load(row + 16 * vi).replacing(with: -.infinity, where: last .< lanes[vi]),
                                    row + 16 * vi)
                            }
                        }
                    }
                    for vi in 0..<4 {
                        var mNew = m[vi]
                        for j in 0..<nk { mNew = vmax(mNew, Micro.load(st + j * blockQ + 16 * vi)) }
                        // A query whose window starts past this block has seen no key yet (max −∞): shift by 0
                        // there, so its exponentials and the rescale of its empty sums are 0, not NaN.
                        let shift = mNew.replacing(with: 0, where: mNew .== -Lanes16(repeating: .infinity))
                        let scaleOld = fastExp(m[vi] - shift)
                        let sum = Softmax.expShiftLanes(st + 16 * vi, stride: blockQ, count: nk, shift: shift)
                        l[vi] = sum.addingProduct(l[vi], scaleOld)
                        m[vi] = mNew
                        for c in 0..<16 { alpha[16 * vi + c] = scaleOld[c] }
                    }
                    for i in 0..<nq where alpha[i] != 1 { Softmax.scaleRow(acc + i * d, d, by: alpha[i]) }
                    // acc += P V = (Pᵀ)ᵀ V   [nq, d]
                    blocks.accumulateValues(nq: nq, nk: nk, k0: k0, kvHead: kvh, st, scratch: scratch, acc)
                }
                for i in 0..<nq {
                    let mi = m[i / 16][i % 16], li = l[i / 16][i % 16]
                    let inv = 1 / li
                    let o = out + (q0 - queryStart + i) * ldq + h * d, a = acc + i * d
                    for c in 0..<d { o[c] = a[c] * inv }
                    lse[h * queryRows + q0 - queryStart + i] = mi + log(li)
                }
            }
        }
    }

    /// Accumulates dq [T, Hq·D], dk, dv [T, Hkv·D] from dout, given the forward's out and lse.
    /// Any of dq/dk/dv may be nil when that input needs no gradient. `bf16` and `keyOnlyRows` as in `forward`; the
    /// key-only rows' output gradient must be zero (their queries get none).
    public static func backward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                                out: UnsafePointer<Float>, lse: UnsafePointer<Float>, dout: UnsafePointer<Float>,
                                shape: Shape, layout: AttentionLayout,
                                dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?,
                                dv: UnsafeMutablePointer<Float>?, keyOnlyRows: Int = 0, bf16: Bool = false) {
        if bf16 {
            precondition(FlashAttentionBF16.applies(headDim: shape.headDim), "bf16 attention")
            backward(BF16BlockProducts(shape: shape, q: q, k: k, v: v, dout: dout), out: out, lse: lse, dout: dout,
                     shape: shape, layout: layout, dq: dq, dk: dk, dv: dv, keyOnlyRows: keyOnlyRows)
        } else {
            backward(BlockProducts(shape: shape, q: q, k: k, v: v, dout: dout, queryStart: 0), out: out, lse: lse,
                     dout: dout, shape: shape, layout: layout, dq: dq, dk: dk, dv: dv, keyOnlyRows: keyOnlyRows)
        }
    }

    /// One unit of the backward pass: query head `head`, the key rows `keys` (whole 64-key blocks) of `segment`, and
    /// every query that sees them (query blocks align with key blocks: blockQ = blockK). `chunk` numbers the key
    /// ranges of one segment in key order (0: its first).
    struct BackwardTask { let head: Int; let segment: Range<Int>; let keys: Range<Int>; let chunk: Int }

    /// A task per head and segment, or, where those are fewer than two per thread (few heads, long segments: 9 tasks
    /// for SmolLM2's full attention against 16 threads), each segment's key blocks cut into ranges of about equal
    /// causal work (a key block is seen by every query after it), so every thread has work. Costliest first.
    static func backwardTasks(_ layout: AttentionLayout, keyOnlyRows: Int, threads: Int) -> [BackwardTask] {
        var whole: [(head: Int, segment: Range<Int>)] = []
        for g in layout.groups { for h in g.heads { for s in g.segments where s.upperBound > keyOnlyRows {
            whole.append((h, s))
        } } }
        let pieces = threads > 1 && whole.count < 2 * threads ? (2 * threads + whole.count - 1) / whole.count : 1
        var tasks: [(task: BackwardTask, cost: Double)] = []
        for (h, s) in whole {
            let blocks = (s.count + blockK - 1) / blockK
            // key block b is seen by the blocks - b query blocks after it
            let total = Double(blocks * (blocks + 1) / 2)
            var first = 0, chunk = 0, done = 0.0
            for b in 0..<blocks {
                done += Double(blocks - b)
                let cut = b == blocks - 1 || done >= total * Double(chunk + 1) / Double(min(pieces, blocks))
                guard cut else { continue }
                let keys = (s.lowerBound + first * blockK)..<min(s.lowerBound + (b + 1) * blockK, s.upperBound)
                let cost = Double((first..<(b + 1)).reduce(0) { $0 + blocks - $1 })
                tasks.append((BackwardTask(head: h, segment: s, keys: keys, chunk: chunk), cost))
                first = b + 1
                chunk += 1
            }
        }
        return tasks.sorted { $0.cost > $1.cost }.map(\.task)
    }

    /// dq[rows, head] += each later key range's private dQ rows, in key order, segments and heads in parallel.
    static func addChunks(_ chunks: [Tensor?], of tasks: [BackwardTask], into dq: UnsafeMutablePointer<Float>, ldq: Int,
                          headDim d: Int) {
        var bySegment: [[Int]: [(chunk: Int, task: Int)]] = [:]   // [head, segment start]
        for (i, task) in tasks.enumerated() where chunks[i] != nil {
            bySegment[[task.head, task.segment.lowerBound], default: []].append((task.chunk, i))
        }
        let groups = bySegment.values.map { $0.sorted { $0.chunk < $1.chunk } }
        Parallel.forEach(groups.count) { gi in
            for (_, i) in groups[gi] {
                let task = tasks[i], src = chunks[i]!.data
                for r in task.keys.lowerBound..<task.segment.upperBound {
                    let row = dq + r * ldq + task.head * d, from = src + (r - task.keys.lowerBound) * d
                    for c in 0..<d { row[c] += from[c] }
                }
            }
        }
    }

    /// The backward pass around any block products.
    static func backward<B: AttentionBlocks>(_ blocks: B, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                                             dout: UnsafePointer<Float>, shape: Shape, layout: AttentionLayout,
                                             dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?,
                                             dv: UnsafeMutablePointer<Float>?, keyOnlyRows: Int) {
        defer { blocks.release() }
        let d = shape.headDim, ldq = shape.ldq, ldk = shape.ldk, t = shape.length
        let group = shape.heads / shape.kvHeads
        // Key/value gradients per query head (exclusive per task), summed over each group at the end.
        let expanded = group > 1 && (dk != nil || dv != nil)
        // Tensors, so that the engine's memory counter (and `longtune plan`'s probe) sees them.
        let dkScratch = expanded && dk != nil ? Tensor(zeros: [t, ldq]) : nil
        let dvScratch = expanded && dv != nil ? Tensor(zeros: [t, ldq]) : nil
        let dkx = expanded ? dkScratch?.data : dk
        let dvx = expanded ? dvScratch?.data : dv
        let ldx = expanded ? ldq : ldk
        defer { withExtendedLifetime((dkScratch, dvScratch)) {} }

        let tasks = backwardTasks(layout, keyOnlyRows: keyOnlyRows, threads: Parallel.threads)
        let ldS = blockK
        // dQ of a task after its segment's first key range: private rows [keys.lowerBound, segment end), added into dq
        // after the pass in key order (so the sums do not depend on which thread ran what).
        let dqChunks: [Tensor?] = tasks.map { task in
            task.chunk > 0 && dq != nil ? Tensor(zeros: [task.segment.upperBound - task.keys.lowerBound, d]) : nil
        }

        Parallel.withSingleThreadedBLAS {
            Parallel.forEach(tasks.count) { ti in
                let task = tasks[ti], h = task.head, seg = task.segment
                let kvh = shape.kvHead(h)
                let p = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * ldS)
                let dp = UnsafeMutablePointer<Float>.allocate(capacity: blockQ * ldS)
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: blocks.scratchCount)
                let delta = UnsafeMutablePointer<Float>.allocate(capacity: seg.count)
                defer { p.deallocate(); dp.deallocate(); scratch.deallocate(); delta.deallocate() }
                // Δ_i = Σ_c dO_ic · O_ic for the rows this task's keys are seen from
                for r in task.keys.lowerBound..<seg.upperBound {
                    let o = out + r * ldq + h * d, g = dout + r * ldq + h * d
                    var acc: Float = 0
                    for c in 0..<d { acc = acc.addingProduct(o[c], g[c]) }
                    delta[r - seg.lowerBound] = acc
                }
                // dQ rows: dq itself, or this task's private rows (chunks after the first)
                let (dqBase, dqFirstRow, lddq): (UnsafeMutablePointer<Float>?, Int, Int) =
                    dqChunks[ti].map { ($0.data, task.keys.lowerBound, d) } ?? (dq.map { $0 + h * d }, 0, ldq)
                for k0 in stride(from: task.keys.lowerBound, to: task.keys.upperBound, by: blockK) {
                    let nk = min(blockK, seg.upperBound - k0)
                    let dkp = dkx.map { $0 + k0 * ldx + (expanded ? h : kvh) * d }
                    let dvp = dvx.map { $0 + k0 * ldx + (expanded ? h : kvh) * d }
                    // Query blocks at or after this key block (aligned to the segment start), up to the last query
                    // whose window still holds one of its keys.
                    let lastQuery = layout.window.map { min(seg.upperBound, k0 + nk - 1 + $0) } ?? seg.upperBound
                    for q0 in stride(from: k0 - (k0 - seg.lowerBound) % blockQ, to: lastQuery, by: blockQ) {
                        let nq = min(blockQ, seg.upperBound - q0)
                        if q0 + nq <= k0 || q0 + nq <= keyOnlyRows { continue }
                        // P = exp(scale · Q Kᵀ − lse)   [nq, 64]
                        blocks.scores(.queryKey, nq: nq, nk: nk, q0: q0, k0: k0, head: h, kvHead: kvh,
                                      alpha: shape.scale, p)
                        for i in 0..<nq {
                            let row = p + i * ldS
                            // A key-only row's query has no lse and takes no part: P = 0 (so dS = 0, no gradient).
                            if q0 + i < keyOnlyRows { row.update(repeating: 0, count: ldS); continue }
                            let visible = min(nk, q0 + i - k0 + 1)
                            for j in max(visible, 0)..<ldS { row[j] = -.infinity }
                            if let w = layout.window {   // keys before the query's window: j < q0 + i − W + 1 − k0
                                for j in 0..<min(max(q0 + i - w + 1 - k0, 0), ldS) { row[j] = -.infinity }
                            }
                            Softmax.expShiftInPlace(row, ldS, shift: lse[h * t + q0 + i])
                        }
                        // dV += Pᵀ dO   [nk, d]
                        if let dvp {
                            blocks.accumulateTransposed(.outputGradient, nk: nk, nq: nq, q0: q0, head: h, p,
                                                        scratch: scratch, dvp, ldc: ldx)
                        }
                        // dP = dO Vᵀ   [nq, nk]
                        blocks.scores(.gradientValue, nq: nq, nk: nk, q0: q0, k0: k0, head: h, kvHead: kvh,
                                      alpha: 1, dp)
                        // dS = scale · P ⊙ (dP − Δ)
                        for i in 0..<nq {
                            Softmax.scoreGrad(p: p + i * ldS, dp: dp + i * ldS, ldS,
                                              delta: delta[q0 + i - seg.lowerBound], scale: shape.scale)
                        }
                        // dQ += dS K ; dK += dSᵀ Q
                        if let dqBase {
                            blocks.accumulateKeys(nq: nq, nk: nk, k0: k0, kvHead: kvh, dp, scratch: scratch,
                                                  dqBase + (q0 - dqFirstRow) * lddq, ldc: lddq)
                        }
                        if let dkp {
                            blocks.accumulateTransposed(.query, nk: nk, nq: nq, q0: q0, head: h, dp, scratch: scratch,
                                                        dkp, ldc: ldx)
                        }
                    }
                }
            }
        }
        if let dq { addChunks(dqChunks, of: tasks, into: dq, ldq: ldq, headDim: d) }
        withExtendedLifetime(dqChunks) {}
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

/// The block products of `FlashAttention` on 64-query × 64-key blocks, given by position (rows of the
/// sequence, heads); the algorithm around them (tasks, masks, online softmax, Δ, dS) is shared. fp32:
/// `BlockProducts`; bf16: `BF16BlockProducts` (docs/CONVENTIONS.md §15).
protocol AttentionBlocks {
    /// Floats of per-task scratch the products use.
    var scratchCount: Int { get }
    /// Frees what the products allocated (after the pass).
    func release()
    /// Before the key blocks of query rows q0 ..< q0 + nq of head `head` (forward).
    func beginQueryBlock(q0: Int, nq: Int, head: Int, scratch: UnsafeMutablePointer<Float>)
    /// sᵀ[nk, 0..<64] = alpha · K[k0 ..< k0 + nk] · Q[q0 ..< q0 + 64]ᵀ (forward; row stride 64).
    func scoresTransposed(nk: Int, nq: Int, k0: Int, q0: Int, head: Int, kvHead: Int, alpha: Float,
                          scratch: UnsafeMutablePointer<Float>, _ st: UnsafeMutablePointer<Float>)
    /// acc[nq, d] += P · V[k0 ..< k0 + nk], P given transposed (pᵀ [nk, 64], as `scoresTransposed` leaves it).
    func accumulateValues(nq: Int, nk: Int, k0: Int, kvHead: Int, _ pt: UnsafePointer<Float>,
                          scratch: UnsafeMutablePointer<Float>, _ acc: UnsafeMutablePointer<Float>)
    /// s[nq, 0..<64] = alpha · A[q0 ..< q0 + nq] · B[k0 ..< k0 + 64]ᵀ: Q·Kᵀ or dO·Vᵀ
    /// (backward; row stride 64).
    func scores(_ product: ScoreProduct, nq: Int, nk: Int, q0: Int, k0: Int, head: Int, kvHead: Int, alpha: Float,
                _ s: UnsafeMutablePointer<Float>)
    /// c[nk, d] += Pᵀ · X[q0 ..< q0 + nq] for p [nq, 64]: X = dO (dV) or Q (dK).
    func accumulateTransposed(_ x: QueryRows, nk: Int, nq: Int, q0: Int, head: Int, _ p: UnsafePointer<Float>,
                              scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int)
    /// c[nq, d] += dS · K[k0 ..< k0 + nk] for ds [nq, 64] (dQ).
    func accumulateKeys(nq: Int, nk: Int, k0: Int, kvHead: Int, _ ds: UnsafePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int)
}

enum ScoreProduct { case queryKey, gradientValue }
enum QueryRows { case outputGradient, query }

/// fp32 block products: register-tiled SIMD micro-kernels when the head dimension is a multiple of 16 (keys and
/// values then read from per-head transposed copies, queries from a per-task one), sgemm otherwise.
struct BlockProducts: AttentionBlocks {
    let d: Int
    let ldk, ldq: Int                              // row strides of k and v, of q and dout
    let q, k, v: UnsafePointer<Float>
    let dout: UnsafePointer<Float>?
    let queryStart: Int                            // q's first row is sequence row queryStart
    let fast: Bool
    let ldt: Int                                   // row stride of the transposed copies
    let kt: UnsafeMutablePointer<Float>?           // [kvHeads, d, ldt] (backward)
    let vt: UnsafeMutablePointer<Float>?

    init(shape: FlashAttention.Shape, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
         dout: UnsafePointer<Float>?, queryStart: Int) {
        d = shape.headDim
        ldk = shape.ldk
        ldq = shape.ldq
        (self.q, self.k, self.v, self.dout, self.queryStart) = (q, k, v, dout, queryStart)
        fast = d % 16 == 0 && FlashAttention.blockK == 64
        ldt = shape.length + FlashAttention.blockK   // a full 64-key read past the end stays inside
        kt = fast && dout != nil ? Self.transposed(k, shape: shape, ldt: ldt) : nil
        vt = fast && dout != nil ? Self.transposed(v, shape: shape, ldt: ldt) : nil
    }

    /// Per KV head, the [d, ldt] transpose of x [T, kvHeads·d] (zero past T).
    static func transposed(_ x: UnsafePointer<Float>, shape: FlashAttention.Shape,
                           ldt: Int) -> UnsafeMutablePointer<Float> {
            let t = shape.length, ldk = shape.ldk, d = shape.headDim
            let out = UnsafeMutablePointer<Float>.allocate(capacity: shape.kvHeads * d * ldt)
            Parallel.forEach(shape.kvHeads) { h in
                let base = out + h * d * ldt
                for c in 0..<d { (base + c * ldt + t).update(repeating: 0, count: ldt - t) }
                for r in 0..<t { for c in 0..<d { base[c * ldt + r] = x[r * ldk + h * d + c] } }
            }
            return out
    }

    func release() { kt?.deallocate(); vt?.deallocate() }

    var scratchCount: Int { d * FlashAttention.blockQ }   // Qᵀ of the forward's query block [d, 64]

    @inline(__always) func queryRows(_ q0: Int, head: Int) -> UnsafePointer<Float> {
        q + (q0 - queryStart) * ldq + head * d
    }

    func beginQueryBlock(q0: Int, nq: Int, head: Int, scratch: UnsafeMutablePointer<Float>) {
        guard fast else { return }
        scratch.initialize(repeating: 0, count: d * FlashAttention.blockQ)
        Micro.transpose(queryRows(q0, head: head), ld: ldq, rows: nq, cols: d, scratch, ldd: FlashAttention.blockQ)
    }

    @inline(__always)
    func scoresTransposed(nk: Int, nq: Int, k0: Int, q0: Int, head: Int, kvHead: Int, alpha: Float,
                          scratch: UnsafeMutablePointer<Float>, _ st: UnsafeMutablePointer<Float>) {
        let kp = k + k0 * ldk + kvHead * d
        if fast {
            Micro.scores(m: nk, d: d, alpha: alpha, kp, lda: ldk, scratch, ldb: FlashAttention.blockQ,
                         st, lds: FlashAttention.blockQ)
        } else {
            BLAS.gemm(transB: true, m: nk, n: nq, k: d, alpha: alpha, kp, lda: ldk, queryRows(q0, head: head), ldb: ldq,
                      st, ldc: FlashAttention.blockQ)
        }
    }

    @inline(__always)
    func accumulateValues(nq: Int, nk: Int, k0: Int, kvHead: Int, _ pt: UnsafePointer<Float>,
                          scratch: UnsafeMutablePointer<Float>, _ acc: UnsafeMutablePointer<Float>) {
        let vp = v + k0 * ldk + kvHead * d
        if fast {
            Micro.accumulateRows(m: nq, n: nk, d: d, pt, ldp: 1, pcs: FlashAttention.blockQ, vp, ldb: ldk, acc, ldc: d)
        } else {
            BLAS.gemm(transA: true, m: nq, n: d, k: nk, pt, lda: FlashAttention.blockQ, vp, ldb: ldk,
                      beta: 1, acc, ldc: d)
        }
    }

    @inline(__always)
    func scores(_ product: ScoreProduct, nq: Int, nk: Int, q0: Int, k0: Int, head: Int, kvHead: Int, alpha: Float,
                _ s: UnsafeMutablePointer<Float>) {
        let a = (product == .queryKey ? q : dout!) + q0 * ldq + head * d
        if fast {
            let bt = (product == .queryKey ? kt : vt)! + kvHead * d * ldt + k0
            Micro.scores(m: nq, d: d, alpha: alpha, a, lda: ldq, bt, ldb: ldt, s, lds: FlashAttention.blockK)
        } else {
            let b = (product == .queryKey ? k : v) + k0 * ldk + kvHead * d
            BLAS.gemm(transB: true, m: nq, n: nk, k: d, alpha: alpha, a, lda: ldq, b, ldb: ldk,
                      s, ldc: FlashAttention.blockK)
        }
    }

    @inline(__always)
    func accumulateTransposed(_ x: QueryRows, nk: Int, nq: Int, q0: Int, head: Int, _ p: UnsafePointer<Float>,
                              scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        let b = (x == .query ? q : dout!) + q0 * ldq + head * d, ldp = FlashAttention.blockK
        if fast {
            Micro.accumulateRows(m: nk, n: nq, d: d, p, ldp: 1, pcs: ldp, b, ldb: ldq, c, ldc: ldc)
        } else {
            BLAS.gemm(transA: true, m: nk, n: d, k: nq, p, lda: ldp, b, ldb: ldq, beta: 1, c, ldc: ldc)
        }
    }

    @inline(__always)
    func accumulateKeys(nq: Int, nk: Int, k0: Int, kvHead: Int, _ ds: UnsafePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>, ldc: Int) {
        let kp = k + k0 * ldk + kvHead * d, ldp = FlashAttention.blockK
        if fast { Micro.accumulateRows(m: nq, n: nk, d: d, ds, ldp: ldp, kp, ldb: ldk, c, ldc: ldc) }
        else { BLAS.gemm(m: nq, n: d, k: nk, ds, lda: ldp, kp, ldb: ldk, beta: 1, c, ldc: ldc) }
    }
}

/// Row kernels of the softmax on padded rows (length a multiple of 16).
enum Softmax {
    /// row = exp(row − shift) in place (not inlined, so that fastExp inlines here).
    @inline(never) static func expShiftInPlace(_ row: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) {
        let sh = Lanes16(repeating: shift)
        var j = 0
        while j < n {
            Micro.store(fastExp(Micro.load(row + j) - sh), row + j)
            j += 16
        }
    }

    /// 16 lanes at x + j·stride = exp(· − shift) for j < n; returns their lane-wise sum. A function
    /// of its own so that fastExp inlines into this loop (inside the large forward closure it was
    /// left as a call, passing vectors through the ABI).
    @inline(never) static func expShiftLanes(_ x: UnsafeMutablePointer<Float>, stride: Int, count n: Int,
                                             shift: Lanes16) -> Lanes16 {
        var sum = Lanes16()
        for j in 0..<n {
            let p = x + j * stride
            let e = fastExp(Micro.load(p) - shift)
            Micro.store(e, p)
            sum += e
        }
        return sum
    }

    /// row[0..<n] *= a (n a multiple of 16 on the SIMD path).
    @inline(__always) static func scaleRow(_ row: UnsafeMutablePointer<Float>, _ n: Int, by a: Float) {
        guard n % 16 == 0 else { for c in 0..<n { row[c] *= a }; return }
        let av = Lanes16(repeating: a)
        var c = 0
        while c < n { Micro.store(Micro.load(row + c) * av, row + c); c += 16 }
    }

    /// dp = scale · p ⊙ (dp − delta)
    @inline(__always) static func scoreGrad(p: UnsafeMutablePointer<Float>, dp: UnsafeMutablePointer<Float>, _ n: Int,
                                            delta: Float, scale: Float) {
        let dl = Lanes16(repeating: delta), sc = Lanes16(repeating: scale)
        var j = 0
        while j < n {
            let pv = UnsafeRawPointer(p + j).loadUnaligned(as: Lanes16.self)
            let raw = UnsafeMutableRawPointer(dp + j)
            raw.storeBytes(of: sc * pv * (raw.loadUnaligned(as: Lanes16.self) - dl), as: Lanes16.self)
            j += 16
        }
    }
}
