import Engine
import Foundation

/// What a KV cache keeps of the stream (docs/CONVENTIONS.md §11).
public struct CachePolicy: Equatable, Sendable, CustomStringConvertible {
    /// The first tokens of the stream, kept however long it grows (StreamingLLM's attention sinks).
    public let sinks: Int
    /// How many recent tokens a query sees besides the sinks; nil: every token (a plain cache).
    public let window: Int?

    public init(sinks: Int = 0, window: Int? = nil) throws {
        // Bounded so that sizes derived from them (sinks + 2·window + a chunk) cannot overflow.
        guard (0...(1 << 40)).contains(sinks) else { throw LongTuneError("--sinks must be in 0...2^40, got \(sinks)") }
        if let window, !(1...(1 << 40)).contains(window) {
            throw LongTuneError("--window must be in 1...2^40, got \(window)")
        }
        if sinks > 0 && window == nil {
            throw LongTuneError("--sinks \(sinks) needs --window W: sinks only matter once a window evicts tokens")
        }
        self.sinks = sinks
        self.window = window
    }

    public static let everything = try! CachePolicy()

    public var description: String {
        guard let window else { return "every token" }
        return sinks > 0 ? "\(sinks) sinks + \(window) recent tokens" : "\(window) recent tokens"
    }
}

/// Keys and values of every layer for the tokens a `CachePolicy` keeps (docs/CONVENTIONS.md §11).
///
/// Rows [0, sinkRows) hold the sink tokens 0…; rows [windowRow, windowRow + windowRows) hold the
/// consecutive tokens from `windowStart` on. Evicted rows are dropped by moving `windowRow` forward;
/// the window part moves back down to row `sinks` only when the storage is full. A plain cache
/// stores keys rotated once at their stream positions; a windowed cache also keeps them before RoPE
/// and re-rotates them whenever the window slides (`shift` changes), so that positions stay at most
/// sinks + window + chunk.
public final class KVCache {
    public let policy: CachePolicy
    let layers: Int
    let width: Int                      // Hkv·D: one row of keys or values
    var keys: [Tensor] = []             // per layer [capacity, Hkv·D], rotated for the current frame
    var rawKeys: [Tensor] = []          // per layer, before RoPE (windowed caches only)
    var values: [Tensor] = []
    var capacity = 0
    /// Stream tokens processed so far.
    public private(set) var tokens = 0
    var sinkRows = 0
    var windowRow: Int
    var windowRows = 0
    var windowStart: Int
    var rotatedShift = 0
    /// The window rows' tables of the last step, for global and for local layers (index 1: Gemma 3's local ones).
    var lastWindowTables: [(positions: Range<Int>, sequenceLength: Int, tables: RopeTables)?] = [nil, nil]

    public init(config: LlamaConfig, policy: CachePolicy) {
        self.policy = policy
        layers = config.numHiddenLayers
        width = config.numKeyValueHeads * config.headDim
        windowRow = policy.sinks
        windowStart = policy.sinks
    }

    var windowed: Bool { policy.window != nil }

    /// Bytes of cache storage allocated.
    public var bytes: Int { (keys.count + rawKeys.count + values.count) * capacity * width * 4 }

    /// Where one chunk's tokens go and how they are rotated; made by `prepare`, used by every layer.
    struct Step {
        let start: Int, count: Int               // stream tokens start..<start + count
        let sinkTokens: Range<Int>               // the chunk's tokens that are sinks (rows = tokens)
        let firstWindowRow: Int                  // row of the chunk's first window token
        let shift: Int                           // window rows sit at position token − shift
        let rerotate: Bool                       // every window row needs rotating afresh
        let sinkKeyTables: RopeTables?           // for the chunk's sink tokens
        let windowKeyTables: RopeTables          // for the rotated window rows (all, or the chunk's own)
        let queryTables: RopeTables              // queries against window keys: position i − shift
        let sinkQueryTables: RopeTables?         // queries against sink keys: min(i, sinks + window)
        let span: CachedAttention.Span
        /// The same step for Gemma 3's local layers: their RoPE tables and sliding window (nil: no local layers).
        var local: Box?

        final class Box { let step: Step; init(_ step: Step) { self.step = step } }

        /// The step as layer `local` or global sees it.
        func forLayer(local isLocal: Bool) -> Step { isLocal ? local!.step : self }
    }

    /// Evicts what no query of the chunk start..<start + count sees, makes room, and plans the step.
    func prepare(count c: Int, model: LlamaForCausalLM) -> Step {
        let s = tokens, sinks = policy.sinks
        if let w = policy.window, windowRows > 0 {
            let keepFrom = max(sinks, s - w)
            if keepFrom > windowStart {
                let drop = keepFrom - windowStart
                windowRow += drop; windowRows -= drop; windowStart = keepFrom
            }
        }
        let sinkTokens = min(s, sinks)..<min(s + c, sinks)
        let newWindowRows = c - sinkTokens.count
        reserve(windowRows + newWindowRows)
        let shift = windowed ? windowStart - sinks : 0
        let rerotate = windowed && shift != rotatedShift
        let lastQuery = s + c - 1
        let sinkQueries = windowed && sinks > 0 && (shift > 0 || lastQuery > sinks + policy.window!)
        let rotated = rerotate ? windowStart..<(s + c) : min(max(s, sinks), s + c)..<(s + c)
        let cap = sinks + (policy.window ?? 0)
        let sequenceLength = windowed ? max(cap, lastQuery - shift) + 1 : s + c
        func step(local: Bool) -> Step {
            let frequencies = model.ropeFrequencies(sequenceLength: sequenceLength, local: local)
            func tables(_ positions: [Int]) -> RopeTables {
                RopeTables(positions: positions, invFreq: frequencies.invFreq,
                           attentionFactor: frequencies.attentionFactor)
            }
            // Once the window is full, every decoding step re-rotates the window at the same slots.
            let windowPositions = (rotated.lowerBound - shift)..<(rotated.upperBound - shift)
            let last = lastWindowTables[local ? 1 : 0]
            if last?.positions != windowPositions || last?.sequenceLength != sequenceLength {
                lastWindowTables[local ? 1 : 0] = (windowPositions, sequenceLength, tables(Array(windowPositions)))
            }
            let window = local ? model.config.slidingWindow : model.config.globalWindow
            let span = CachedAttention.Span(
                sinkRows: min(s + c, sinks), windowRow: windowRow, windowRows: windowRows + newWindowRows,
                windowStart: windowStart, queryStart: s, queries: c, window: visibleWindow(modelWindow: window))
            return Step(start: s, count: c, sinkTokens: sinkTokens, firstWindowRow: windowRow + windowRows,
                        shift: shift, rerotate: rerotate,
                        sinkKeyTables: sinkTokens.isEmpty ? nil : tables(Array(sinkTokens)),
                        windowKeyTables: lastWindowTables[local ? 1 : 0]!.tables,
                        queryTables: tables((s..<(s + c)).map { $0 - shift }),
                        sinkQueryTables: sinkQueries ? tables((s..<(s + c)).map { min($0, cap) }) : nil,
                        span: span)
        }
        var global = step(local: false)
        if model.config.hasLocalLayers { global.local = Step.Box(step(local: true)) }
        return global
    }

    /// How many tokens before it a query sees besides the sinks: the policy's window, narrowed to the model's sliding
    /// window (W keys, the query's own included: W − 1 before it) where the layer has one.
    func visibleWindow(modelWindow: Int?) -> Int? {
        guard let w = modelWindow else { return policy.window }
        return min(policy.window ?? Int.max, w - 1)
    }

    /// Allocates a plain cache's storage for `tokens` tokens at once (a windowed cache sizes itself).
    public func reserveCapacity(_ tokens: Int) {
        if !windowed && tokens > capacity { reserve(tokens) }
    }

    /// Room for `rows` window rows after `windowRow`: moves the window part down to row `sinks` when
    /// it would run past the storage, and grows the storage when that is not enough.
    func reserve(_ rows: Int) {
        if windowRow + rows > capacity, windowRow > policy.sinks {
            let from = windowRow * width, to = policy.sinks * width, n = windowRows * width
            for t in keys + rawKeys + values { (t.data + to).update(from: t.data + from, count: n) }
            windowRow = policy.sinks
        }
        guard windowRow + rows > capacity else { return }
        // Doubling; a window never needs more than its sinks, two windows (one evicted, not yet
        // moved down) and the chunk.
        var grown = max(windowRow + rows, 2 * capacity, 256)
        if let w = policy.window { grown = max(windowRow + rows, min(grown, policy.sinks + 2 * w + rows)) }
        func grow(_ old: [Tensor]) -> [Tensor] {
            (0..<layers).map { l in
                let t = Tensor(zeros: [grown, width])
                if l < old.count { t.data.update(from: old[l].data, count: capacity * width) }
                return t
            }
        }
        keys = grow(keys); values = grow(values)
        if windowed { rawKeys = grow(rawKeys) }
        capacity = grown
    }

    /// Stores layer `l`'s keys (before RoPE) and values of the chunk, rotates what the step says,
    /// and returns the attention output [count, H·D] for the chunk's queries q [count, H·D] (before RoPE).
    func attend(layer l: Int, q: Tensor, k: Tensor, v: Tensor, step: Step, shape: CachedAttention.Shape) -> Tensor {
        let c = step.count, w = width, nSink = step.sinkTokens.count
        let heads = shape.kvHeads, d = shape.headDim
        let keys = keys[l], values = values[l]
        // The chunk's sink tokens go to rows = their stream index, the rest after the window rows.
        if nSink > 0 {
            let rows = step.sinkTokens.lowerBound * w
            (keys.data + rows).update(from: k.data, count: nSink * w)
            (values.data + rows).update(from: v.data, count: nSink * w)
            step.sinkKeyTables!.rotate(keys.data + rows, rows: nSink, heads: heads, headDim: d)
        }
        let newRows = step.firstWindowRow * w, newCount = (c - nSink) * w
        (values.data + newRows).update(from: v.data + nSink * w, count: newCount)
        if windowed {
            let raw = rawKeys[l]
            (raw.data + newRows).update(from: k.data + nSink * w, count: newCount)
            let first = step.rerotate ? step.span.windowRow : step.firstWindowRow
            let count = step.rerotate ? step.span.windowRows : c - nSink
            (keys.data + first * w).update(from: raw.data + first * w, count: count * w)
            step.windowKeyTables.rotate(keys.data + first * w, rows: count, heads: heads, headDim: d)
        } else {
            (keys.data + newRows).update(from: k.data + nSink * w, count: newCount)
            step.windowKeyTables.rotate(keys.data + newRows, rows: c - nSink, heads: heads, headDim: d)
        }
        func rotated(_ tables: RopeTables) -> Tensor {
            let r = q.copy()
            tables.rotate(r.data, rows: c, heads: shape.heads, headDim: d)
            return r
        }
        let qWindow = rotated(step.queryTables), qSinks = step.sinkQueryTables.map(rotated)
        let out = Tensor(uninitialized: [c, shape.heads * d])
        CachedAttention.forward(qWindow: qWindow.data, qSinks: qSinks.map { UnsafePointer($0.data) },
                                keys: keys.data, values: values.data, shape: shape, span: step.span, out: out.data)
        return out
    }

    /// Records the chunk as processed (after every layer has attended).
    func commit(_ step: Step) {
        tokens += step.count
        sinkRows = step.span.sinkRows
        windowRows = step.span.windowRows
        rotatedShift = step.shift
    }
}
