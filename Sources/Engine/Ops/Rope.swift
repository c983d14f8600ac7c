/// Rotary position embedding, HF Llama layout (docs/CONVENTIONS.md §1): dimension i pairs with i + rd/2 of the
/// same head ("rotate half"), not the interleaved 2i, 2i+1.

/// cos/sin tables [T, rd/2] for the positions of a sequence, already multiplied by the scaling
/// kind's attention factor. `rotaryDim` (rd) may be less than the head dimension (partial rotary).
public struct RopeTables {
    public let cos: Tensor
    public let sin: Tensor
    public let rotaryDim: Int

    public init(cos: Tensor, sin: Tensor, rotaryDim: Int) {
        precondition(cos.shape == sin.shape && cos.shape.count == 2 && cos.shape[1] * 2 == rotaryDim,
                     "RopeTables: cos \(cos.shape), sin \(sin.shape), rotary dim \(rotaryDim)")
        self.cos = cos; self.sin = sin; self.rotaryDim = rotaryDim
    }

    /// Tables for `positions` from inverse frequencies [rd/2] and an attention factor.
    public init(positions: [Int], invFreq: [Double], attentionFactor: Double = 1) {
        let half = invFreq.count
        let c = Tensor(uninitialized: [positions.count, half]), s = Tensor(uninitialized: [positions.count, half])
        for (t, m) in positions.enumerated() {
            for i in 0..<half {
                // fp32 angle, as transformers computes it (float32 inv_freq times float32 position).
                let angle = Float(invFreq[i]) * Float(m)
                c.data[t * half + i] = Float(Double(_cos(angle)) * attentionFactor)
                s.data[t * half + i] = Float(Double(_sin(angle)) * attentionFactor)
            }
        }
        self.init(cos: c, sin: s, rotaryDim: 2 * half)
    }
}

import Foundation

@inline(__always) private func _cos(_ x: Float) -> Float { Float(Foundation.cos(Double(x))) }
@inline(__always) private func _sin(_ x: Float) -> Float { Float(Foundation.sin(Double(x))) }

extension Graph {
    /// Rotates each head of x [T, heads·headDim] by the tables' angles.
    public func rope(_ x: Variable, heads: Int, headDim: Int, tables: RopeTables) -> Variable {
        return Profile.time(.rowwise) {
            let t = x.shape[0]
            precondition(x.shape == [t, heads * headDim] && tables.cos.shape[0] == t && tables.rotaryDim <= headDim,
                         "rope: x \(x.shape), \(heads) heads × \(headDim), tables \(tables.cos.shape)")
            let y = x.value.copy()
            Self.rotate(y.data, t: t, heads: heads, headDim: headDim, tables: tables, inverse: false)
            return output(y, [x]) { out in
                // Backward applies the transposed rotation (angle −θ, same attention factor).
                let g = out.grad!.copy()
                Self.rotate(g.data, t: t, heads: heads, headDim: headDim, tables: tables, inverse: true)
                Vec.add(x.gradBuffer().data, g.data, g.count)
            }
        }
    }

    static func rotate(_ p: UnsafeMutablePointer<Float>, t: Int, heads: Int, headDim: Int, tables: RopeTables,
                       inverse: Bool) {
        let half = tables.rotaryDim / 2
        let sign: Float = inverse ? -1 : 1
        Parallel.chunks(t, minChunk: 32) { rows in
            for r in rows {
                let c = tables.cos.data + r * half, s = tables.sin.data + r * half
                for h in 0..<heads {
                    let x = p + r * heads * headDim + h * headDim
                    for i in 0..<half {
                        let x1 = x[i], x2 = x[i + half], si = sign * s[i]
                        x[i] = x1 * c[i] - x2 * si
                        x[i + half] = x2 * c[i] + x1 * si
                    }
                }
            }
        }
    }
}

extension RopeTables {
    /// Rotates x [rows, heads·headDim] in place, row r by table row r (forward only: the KV cache).
    public func rotate(_ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int) {
        precondition(cos.shape[0] == rows && rotaryDim <= headDim, "rope: \(rows) rows, tables \(cos.shape)")
        Graph.rotate(x, t: rows, heads: heads, headDim: headDim, tables: self, inverse: false)
    }
}
