/// LlamaRMSNorm: y = weight ⊙ x / √(mean(x²) + eps), row by row; Gemma's: (offset + weight) with offset 1.

extension Graph {
    /// x [T, C], weight [C] -> [T, C]; or x [T, H·D], weight [D] -> [T, H·D], each head's D values normalised on
    /// their own (Qwen3's per-head `q_norm`/`k_norm`: HF's [T, H, D] view, whose rows are these pieces).
    /// `weightOffset` is added to every weight (Gemma3RMSNorm's `1 + weight`); the weight's gradient is unchanged.
    public func rmsNorm(_ x: Variable, weight: Variable, eps: Float, weightOffset: Float = 0) -> Variable {
        return Profile.time(.rowwise) {
            let c = weight.shape[0]
            precondition(x.shape.count == 2 && weight.shape.count == 1 && x.shape[1] % c == 0,
                         "rmsNorm: x \(x.shape), weight \(weight.shape)")
            let t = x.shape[0] * (x.shape[1] / c)   // rows of C values
            let y = Tensor(uninitialized: x.shape)
            let rstd = Tensor(uninitialized: [t])   // saved for backward
            let xp = x.value.data
            let scale = weightOffset == 0 ? weight.value : weight.value.copy()   // offset + weight
            if weightOffset != 0 { for j in 0..<c { scale.data[j] += weightOffset } }
            let w = scale.data
            Parallel.chunks(t, minChunk: 16) { rows in
                for r in rows {
                    let xr = xp + r * c, yr = y.data + r * c
                    var ss: Float = 0
                    for j in 0..<c { ss = ss.addingProduct(xr[j], xr[j]) }
                    let inv = 1 / (ss / Float(c) + eps).squareRoot()
                    rstd.data[r] = inv
                    for j in 0..<c { yr[j] = w[j] * (xr[j] * inv) }
                }
            }
            return output(y, [x, weight]) { out in
                withExtendedLifetime(scale) {}
                let dy = out.grad!.data
                let pieces = Parallel.threads
                // Per-piece partial sums of dweight, reduced after the parallel loop.
                let partial = weight.requiresGrad ? Tensor(zeros: [pieces, c]) : nil
                let dx = x.requiresGrad ? x.gradBuffer().data : nil
                Parallel.forEach(pieces) { p in
                    let lo = t * p / pieces, hi = t * (p + 1) / pieces
                    for r in lo..<hi {
                        let xr = xp + r * c, gr = dy + r * c, inv = rstd.data[r]
                        if let partial {
                            let pw = partial.data + p * c
                            for j in 0..<c { pw[j] = pw[j].addingProduct(gr[j], xr[j] * inv) }
                        }
                        if let dx {
                            // dx = inv · (g⊙w − x̂ · mean(g⊙w⊙x̂))
                            var dot: Float = 0
                            for j in 0..<c { dot = dot.addingProduct(gr[j] * w[j], xr[j] * inv) }
                            let k = dot / Float(c)
                            let dr = dx + r * c
                            for j in 0..<c { dr[j] += inv * (gr[j] * w[j] - xr[j] * inv * k) }
                        }
                    }
                }
                if let partial {
                    let gw = weight.gradBuffer().data
                    for p in 0..<pieces { Vec.add(gw, partial.data + p * c, c) }
                }
            }
        }
    }
}
