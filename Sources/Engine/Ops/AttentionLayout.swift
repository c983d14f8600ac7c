/// Which keys each query may see: per group of query heads, the segments of the sequence inside
/// which attention is causal. Segments of a group are sorted, disjoint and cover 0..<length, so
/// full causal attention, packed documents and S2-Attn's shifted groups are all one description.
/// `window` W (Mistral's `sliding_window`, docs/CONVENTIONS.md §22): query i sees only keys
/// i − W + 1 … i of its segment.
public struct AttentionLayout: Equatable, Sendable {
    public struct Group: Equatable, Sendable {
        public var heads: Range<Int>
        public var segments: [Range<Int>]
        public init(heads: Range<Int>, segments: [Range<Int>]) {
            self.heads = heads
            self.segments = segments
        }
    }

    public let length: Int
    public let heads: Int
    public let groups: [Group]
    public private(set) var window: Int?

    /// Validates that groups cover every head once and each group's segments partition 0..<length.
    public init(length: Int, heads: Int, groups: [Group], window: Int? = nil) throws {
        if let window, window < 1 { throw LongTuneError("attention layout: a sliding window of \(window) keys") }
        var seen = [Bool](repeating: false, count: heads)
        for g in groups {
            guard g.heads.lowerBound >= 0, g.heads.upperBound <= heads else {
                throw LongTuneError("attention layout: heads \(g.heads) outside 0..<\(heads)")
            }
            for h in g.heads {
                if seen[h] { throw LongTuneError("attention layout: head \(h) appears in two groups") }
                seen[h] = true
            }
            var next = 0
            for s in g.segments {
                guard s.lowerBound == next, !s.isEmpty else {
                    throw LongTuneError("attention layout: segments \(g.segments) must be non-empty, sorted "
                                        + "and contiguous from 0")
                }
                next = s.upperBound
            }
            guard next == length else {
                throw LongTuneError(
                    "attention layout: segments \(g.segments) end at \(next), sequence length is \(length)")
            }
        }
        if let missing = seen.firstIndex(of: false) {
            throw LongTuneError("attention layout: head \(missing) has no segments")
        }
        self.length = length
        self.heads = heads
        self.groups = groups
        self.window = window
    }

    /// The layout with each query limited to its `window` latest keys (nil: no limit).
    public func sliding(_ window: Int?) -> AttentionLayout {
        var l = self
        l.window = window
        return l
    }

    /// The first key query `i` of segment `s` sees.
    public func firstKey(query i: Int, segment s: Range<Int>) -> Int {
        window.map { max(s.lowerBound, i - $0 + 1) } ?? s.lowerBound
    }

    /// Plain causal attention over the whole sequence.
    public static func causal(length: Int, heads: Int) -> AttentionLayout {
        try! AttentionLayout(length: length, heads: heads, groups: [Group(heads: 0..<heads, segments: [0..<length])])
    }

    /// Causal attention inside each packed document; `documentStarts` are the first token of each
    /// document (0 first, strictly increasing).
    public static func documents(length: Int, heads: Int, documentStarts: [Int]) throws -> AttentionLayout {
        let segments = segments(from: documentStarts, length: length)
        return try AttentionLayout(length: length, heads: heads, groups: [Group(heads: 0..<heads, segments: segments)])
    }

    /// Segments from sorted start offsets (0 first).
    public static func segments(from starts: [Int], length: Int) -> [Range<Int>] {
        let ends = Array(starts.dropFirst()) + [length]
        return zip(starts, ends).map { $0..<$1 }
    }

    /// Intersection of two partitions of 0..<length (e.g. S2 groups within packed documents).
    public static func intersect(_ a: [Range<Int>], _ b: [Range<Int>]) -> [Range<Int>] {
        let cuts = Set(a.map(\.lowerBound) + b.map(\.lowerBound)).sorted()
        let length = max(a.last?.upperBound ?? 0, b.last?.upperBound ?? 0)
        return segments(from: cuts, length: length)
    }

    /// The layout of rows `r` alone, renumbered from 0: each segment cut to `r` (a sequence-parallel rank's rows
    /// with their halo, docs/CONVENTIONS.md §17). A query in `r` keeps every key it had whose row is in `r`.
    public func window(_ r: Range<Int>) throws -> AttentionLayout {
        precondition(r.lowerBound >= 0 && r.upperBound <= length && !r.isEmpty, "window \(r) of \(length) rows")
        let cut = groups.map { g in
            Group(heads: g.heads, segments: g.segments.map { $0.clamped(to: r) }.filter { !$0.isEmpty }
                .map { ($0.lowerBound - r.lowerBound)..<($0.upperBound - r.lowerBound) })
        }
        return try AttentionLayout(length: r.count, heads: heads, groups: cut, window: window)
    }

    /// Query × key pairs this layout keeps (for FLOP counts): Σ over heads and segments of n(n+1)/2, or with a window
    /// W < n, W(W+1)/2 + (n − W)·W; in floating point (a plan may ask about lengths whose count overflows an Int).
    public var keptScores: Double {
        func kept(_ n: Double) -> Double {
            guard let w = window.map(Double.init), w < n else { return n * (n + 1) / 2 }
            return w * (w + 1) / 2 + (n - w) * w
        }
        return groups.reduce(0.0) { acc, g in
            acc + Double(g.heads.count) * g.segments.reduce(0.0) { $0 + kept(Double($1.count)) }
        }
    }
}

extension AttentionLayout {
    /// S2-Attn's group size for a sequence: length × ratio, which must be a whole, even number (the
    /// shifted heads move by half a group) that divides the length (docs/CONVENTIONS.md §4). The one
    /// check behind the recipe, the model and the kernel.
    public static func s2GroupSize(length: Int, ratio: Double) throws -> Int {
        let g = Double(length) * ratio
        guard g.isFinite, g >= 2, g == g.rounded(), g <= Double(length) else {
            throw s2Error(length: length, detail: "group ratio \(ratio) gives a group of \(g) tokens")
        }
        try checkS2Group(length: length, groupSize: Int(g))
        return Int(g)
    }

    /// Throws unless `groupSize` is positive, even and divides `length`.
    public static func checkS2Group(length: Int, groupSize g: Int) throws {
        guard g >= 2, g % 2 == 0, length % g == 0 else {
            throw s2Error(length: length, detail: "group size \(g)")
        }
    }

    private static func s2Error(length: Int, detail: String) -> LongTuneError {
        LongTuneError("S2-Attn: sequence length \(length), \(detail): the group size must be even and the length a "
                      + "multiple of it; choose a length that is a multiple of 2/ratio, or another group ratio")
    }

    /// Shift Short Attention (LongLoRA, docs/CONVENTIONS.md §4), `boundaries` variant: heads [0, H/2)
    /// attend causally inside groups [0,G), [G,2G), …; heads [H/2, H) inside [0,G/2), [G/2,3G/2), …,
    /// [L−G/2, L). `within` (e.g. packed documents) further splits both.
    public static func shiftedShort(length: Int, heads: Int, groupSize g: Int,
                                    within: [Range<Int>]? = nil) throws -> AttentionLayout {
        try checkS2Group(length: length, groupSize: g)
        let plain = stride(from: 0, to: length, by: g).map { $0..<($0 + g) }
        let shiftedStarts = [0] + stride(from: g / 2, to: length, by: g).map { $0 }
        var shifted = segments(from: shiftedStarts, length: length)
        var first = plain
        if let within {
            first = intersect(first, within)
            shifted = intersect(shifted, within)
        }
        return try AttentionLayout(length: length, heads: heads, groups: [
            Group(heads: 0..<(heads / 2), segments: first),
            Group(heads: (heads / 2)..<heads, segments: shifted),
        ].filter { !$0.heads.isEmpty })
    }
}
