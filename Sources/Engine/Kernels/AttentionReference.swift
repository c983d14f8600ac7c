import Foundation

/// The naive O(T²) twin of `FlashAttention`, in Double: the test oracle for the fused kernel.
public enum AttentionReference {
    /// Allowed keys of query `i` for head `h`: the causal prefix of its segment, its last `window` keys where set.
    static func keys(_ layout: AttentionLayout, head h: Int, query i: Int) -> Range<Int> {
        let g = layout.groups.first { $0.heads.contains(h) }!
        let s = g.segments.first { $0.contains(i) }!
        return max(s.lowerBound, i - (layout.window ?? i + 1) + 1)..<(i + 1)
    }

    static func probabilities(q: [Float], k: [Float], shape: FlashAttention.Shape, layout: AttentionLayout,
                              h: Int, i: Int) -> (keys: Range<Int>, p: [Double]) {
        let d = shape.headDim, kvh = shape.kvHead(h)
        let ks = keys(layout, head: h, query: i)
        var scores = ks.map { j -> Double in
            var acc = 0.0
            for c in 0..<d { acc += Double(q[i * shape.ldq + h * d + c]) * Double(k[j * shape.ldk + kvh * d + c]) }
            return acc * Double(shape.scale)
        }
        let m = scores.max()!
        scores = scores.map { exp($0 - m) }
        let z = scores.reduce(0, +)
        return (ks, scores.map { $0 / z })
    }

    public static func forward(q: [Float], k: [Float], v: [Float], shape: FlashAttention.Shape,
                               layout: AttentionLayout) -> [Float] {
        let d = shape.headDim
        var out = [Float](repeating: 0, count: shape.length * shape.ldq)
        for h in 0..<shape.heads {
            let kvh = shape.kvHead(h)
            for i in 0..<shape.length {
                let (ks, p) = probabilities(q: q, k: k, shape: shape, layout: layout, h: h, i: i)
                for c in 0..<d {
                    var acc = 0.0
                    for (n, j) in ks.enumerated() { acc += p[n] * Double(v[j * shape.ldk + kvh * d + c]) }
                    out[i * shape.ldq + h * d + c] = Float(acc)
                }
            }
        }
        return out
    }

    /// Gradients (dq, dk, dv) of Σ dout ⊙ out.
    public static func backward(q: [Float], k: [Float], v: [Float], dout: [Float], shape: FlashAttention.Shape,
                                layout: AttentionLayout) -> (dq: [Float], dk: [Float], dv: [Float]) {
        let d = shape.headDim
        var dq = [Double](repeating: 0, count: q.count)
        var dk = [Double](repeating: 0, count: k.count), dv = [Double](repeating: 0, count: v.count)
        for h in 0..<shape.heads {
            let kvh = shape.kvHead(h)
            for i in 0..<shape.length {
                let (ks, p) = probabilities(q: q, k: k, shape: shape, layout: layout, h: h, i: i)
                // dP_j = dO · V_j ; dS_j = P_j (dP_j − Σ P dP)
                let dP = ks.map { j -> Double in
                    (0..<d).reduce(0.0) {
                        $0 + Double(dout[i * shape.ldq + h * d + $1]) * Double(v[j * shape.ldk + kvh * d + $1])
                    }
                }
                let dot = zip(p, dP).reduce(0.0) { $0 + $1.0 * $1.1 }
                for (n, j) in ks.enumerated() {
                    let ds = p[n] * (dP[n] - dot) * Double(shape.scale)
                    for c in 0..<d {
                        dv[j * shape.ldk + kvh * d + c] += p[n] * Double(dout[i * shape.ldq + h * d + c])
                        dq[i * shape.ldq + h * d + c] += ds * Double(k[j * shape.ldk + kvh * d + c])
                        dk[j * shape.ldk + kvh * d + c] += ds * Double(q[i * shape.ldq + h * d + c])
                    }
                }
            }
        }
        return (dq.map { Float($0) }, dk.map { Float($0) }, dv.map { Float($0) })
    }
}
