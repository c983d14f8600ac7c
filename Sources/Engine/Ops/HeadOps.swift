/// Head-wise rearrangements used by S2-Attn's `roll` variant: rolling some heads along the
/// sequence, and repeating grouped KV heads to one per query head (transformers' repeat_kv).

extension Graph {
    /// For heads in `heads` of x [T, H·D]: y[t] = x[(t + shift) mod T] (torch.roll by −shift);
    /// other heads pass through.
    public func rollRows(_ x: Variable, heads: Range<Int>, headDim d: Int, shift: Int) -> Variable {
        return Profile.time(.rowwise) {
            let t = x.shape[0], width = x.shape[1]
            precondition(heads.upperBound * d <= width, "rollRows: heads \(heads) × \(d) exceed width \(width)")
            let y = x.value.copy()
            Self.roll(from: x.value.data, to: y.data, t: t, width: width,
                      cols: heads.lowerBound * d..<heads.upperBound * d, shift: shift, accumulate: false)
            return output(y, [x]) { out in
                let dy = out.grad!, dx = x.gradBuffer()
                // Heads outside the range: gradient passes straight through.
                let lo = heads.lowerBound * d, hi = heads.upperBound * d
                Parallel.chunks(t, minChunk: 64) { rows in
                    for r in rows {
                        for c in 0..<lo { dx.data[r * width + c] += dy.data[r * width + c] }
                        for c in hi..<width { dx.data[r * width + c] += dy.data[r * width + c] }
                    }
                }
                Self.roll(from: dy.data, to: dx.data, t: t, width: width, cols: lo..<hi, shift: -shift,
                          accumulate: true)
            }
        }
    }

    static func roll(from src: UnsafeMutablePointer<Float>, to dst: UnsafeMutablePointer<Float>, t: Int, width: Int,
                     cols: Range<Int>, shift: Int, accumulate: Bool) {
        Parallel.chunks(t, minChunk: 64) { rows in
            for r in rows {
                let s = ((r + shift) % t + t) % t
                let sp = src + s * width + cols.lowerBound, dp = dst + r * width + cols.lowerBound
                if accumulate { Vec.add(dp, sp, cols.count) } else { dp.update(from: sp, count: cols.count) }
            }
        }
    }

    /// [T, kvHeads·D] -> [T, kvHeads·group·D], each KV head repeated `group` times in place.
    public func repeatKV(_ x: Variable, kvHeads: Int, group: Int, headDim d: Int) -> Variable {
        return Profile.time(.rowwise) {
            let t = x.shape[0]
            precondition(x.shape == [t, kvHeads * d], "repeatKV: x \(x.shape) != [\(t), \(kvHeads * d)]")
            if group == 1 { return x }
            let y = Tensor(uninitialized: [t, kvHeads * group * d])
            Parallel.chunks(t, minChunk: 64) { rows in
                for r in rows { for h in 0..<kvHeads { for g in 0..<group {
                    (y.data + (r * kvHeads * group + h * group + g) * d)
                        .update(from: x.value.data + (r * kvHeads + h) * d, count: d)
                } } }
            }
            return output(y, [x]) { out in
                let dy = out.grad!, dx = x.gradBuffer()
                Parallel.chunks(t, minChunk: 64) { rows in
                    for r in rows { for h in 0..<kvHeads { for g in 0..<group {
                        Vec.add(dx.data + (r * kvHeads + h) * d, dy.data + (r * kvHeads * group + h * group + g) * d, d)
                    } } }
                }
            }
        }
    }
}

extension Graph {
    /// Columns `range` of x [T, N] as [T, n]: one part of a fused projection's output (Phi-3's q/k/v of `qkv_proj`,
    /// gate and up of `gate_up_proj`). The gradient goes back into those columns.
    public func columns(_ x: Variable, _ range: Range<Int>) -> Variable {
        return Profile.time(.rowwise) {
            let t = x.shape[0], n = x.shape[1], w = range.count
            precondition(x.shape.count == 2 && range.lowerBound >= 0 && range.upperBound <= n && w > 0,
                         "columns \(range) of \(x.shape)")
            let y = Tensor(uninitialized: [t, w])
            let xp = x.value.data + range.lowerBound
            Parallel.chunks(t, minChunk: 64) { rows in
                for r in rows { (y.data + r * w).update(from: xp + r * n, count: w) }
            }
            return output(y, [x]) { out in
                let dy = out.grad!.data, dx = x.gradBuffer().data + range.lowerBound
                Parallel.chunks(t, minChunk: 64) { rows in
                    for r in rows { Vec.add(dx + r * n, dy + r * w, w) }
                }
            }
        }
    }
}
