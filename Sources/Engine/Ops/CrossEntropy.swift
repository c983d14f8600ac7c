import Foundation

/// Cross-entropy with ignore index (−100, as torch), mean over the targets that count; and the
/// same loss fused with the LM head, chunked along the sequence so that the [T, V] logits are
/// never materialized.

enum CrossEntropyKernel {
    /// Loss of one row of logits; when `gradScale` is given, overwrites the row with
    /// gradScale · (softmax − onehot(target)). SIMD over the vocabulary.
    @inline(__always)
    static func row(_ z: UnsafeMutablePointer<Float>, _ v: Int, target: Int, gradScale: Float?) -> Double {
        let vec = v / 16 * 16
        var mv = Lanes16(repeating: -.infinity), check = Lanes16()
        var j = 0
        while j < vec { let x = Micro.load(z + j); mv = vmax(mv, x); check += x - x; j += 16 }
        var m = mv.max()
        var scalarCheck: Float = 0
        for k in vec..<v { m = max(m, z[k]); scalarCheck += z[k] - z[k] }
        // NaN or infinite logits (a diverged model) must surface as a NaN loss, not be masked by max/exp.
        if !(check.sum() + scalarCheck).isFinite { return .nan }
        var sv = Lanes16(), sum: Float = 0
        let mm = Lanes16(repeating: m)
        j = 0
        while j < vec { sv += fastExp(Micro.load(z + j) - mm); j += 16 }
        for k in vec..<v { sum += fastExp(z[k] - m) }
        let lse = Double(m) + log(Double(sv.sum()) + Double(sum))
        let loss = lse - Double(z[target])
        if let gs = gradScale {
            let shift = Lanes16(repeating: Float(lse)), g = Lanes16(repeating: gs)
            j = 0
            while j < vec { Micro.store(g * fastExp(Micro.load(z + j) - shift), z + j); j += 16 }
            for k in vec..<v { z[k] = gs * fastExp(z[k] - Float(lse)) }
            z[target] -= gs
        }
        return loss
    }

    static func count(_ targets: [Int32], ignoreIndex: Int32, vocab: Int) -> Int {
        var n = 0
        for (i, t) in targets.enumerated() where t != ignoreIndex {
            precondition(t >= 0 && Int(t) < vocab,
                         "cross-entropy: target \(t) at position \(i) is outside 0..<\(vocab)")
            n += 1
        }
        return n
    }

    /// Sums the losses of `rows` (a slice of a logits block whose first row is target index `base`),
    /// in parallel; rows with the ignore index contribute nothing and get a zero gradient. Each
    /// row's loss is also left in `perRow` when given.
    static func block(_ z: UnsafeMutablePointer<Float>, rows: Int, v: Int, targets: [Int32], base: Int,
                      ignoreIndex: Int32, gradScale: Float?, perRow: UnsafeMutablePointer<Double>? = nil) -> Double {
        let partial = perRow ?? UnsafeMutablePointer<Double>.allocate(capacity: rows)
        defer { if perRow == nil { partial.deallocate() } }
        Parallel.chunks(rows, minChunk: 4) { rs in
            for r in rs {
                let t = targets[base + r]
                if t == ignoreIndex {
                    partial[r] = 0
                    if gradScale != nil { (z + r * v).update(repeating: 0, count: v) }
                } else {
                    partial[r] = row(z + r * v, v, target: Int(t), gradScale: gradScale)
                }
            }
        }
        var s = 0.0
        for r in 0..<rows { s += partial[r] }
        return s
    }
}

/// Per-position losses of the LM head, for evaluation: one forward pass then gives the loss of
/// every prefix of the window.
public enum LMHeadLoss {
    /// losses[i] = cross-entropy of (hidden[i] · weightᵀ) against targets[i] (0 where ignored);
    /// hidden [T, C], weight [V, C]; `chunk` rows of logits at a time.
    public static func perToken(hidden: Tensor, weight: HeadWeight, targets: [Int32], ignoreIndex: Int32 = -100,
                                chunk: Int = 256) -> [Double] {
        let (t, c) = (hidden.shape[0], hidden.shape[1])
        let v = weight.shape[0]
        precondition(weight.shape == [v, c] && targets.count == t,
                     "LMHeadLoss.perToken: hidden \(hidden.shape), weight \(weight.shape), \(targets.count) targets")
        // checks every target is in the vocabulary
        _ = CrossEntropyKernel.count(targets, ignoreIndex: ignoreIndex, vocab: v)
        let rows = max(1, min(chunk, t))
        let z = Tensor(uninitialized: [rows, v])
        var losses = [Double](repeating: 0, count: t)
        losses.withUnsafeMutableBufferPointer { out in
            for r0 in stride(from: 0, to: t, by: rows) {
                let nr = min(rows, t - r0)
                weight.logits(hidden.data + r0 * c, rows: nr, into: z.data)
                _ = CrossEntropyKernel.block(z.data, rows: nr, v: v, targets: targets, base: r0,
                                             ignoreIndex: ignoreIndex, gradScale: nil, perRow: out.baseAddress! + r0)
            }
        }
        return losses
    }

    /// −log softmax(z)[target] of one row of logits (left unchanged).
    public static func nll(logits z: UnsafeMutablePointer<Float>, vocab v: Int, target: Int) -> Double {
        CrossEntropyKernel.row(z, v, target: target, gradScale: nil)
    }
}

extension Graph {
    /// Mean cross-entropy of logits [T, V] against targets [T] (ignoreIndex skipped); NaN when no
    /// target counts, as torch.
    public func crossEntropy(_ logits: Variable, targets: [Int32], ignoreIndex: Int32 = -100) -> Variable {
        return Profile.time(.lmHeadLoss) {
            let (t, v) = (logits.shape[0], logits.shape[1])
            precondition(targets.count == t, "crossEntropy: \(targets.count) targets for \(t) rows")
            let n = CrossEntropyKernel.count(targets, ignoreIndex: ignoreIndex, vocab: v)
            let work = logits.value.copy()
            let recording = needsGrad(logits)
            let total = CrossEntropyKernel.block(work.data, rows: t, v: v, targets: targets, base: 0,
                                                 ignoreIndex: ignoreIndex, gradScale: recording ? 1 / Float(n) : nil)
            return output(Tensor(shape: [1], [Float(total / Double(n))]), [logits]) { out in
                Vec.addScaled(logits.gradBuffer().data, work.data, out.grad![0], work.count)
            }
        }
    }

    /// Mean cross-entropy of (hidden · weightᵀ) against targets, computed `chunk` rows at a time:
    /// hidden [T, C], weight [V, C] (the LM head, possibly tied to the embeddings, possibly a frozen 16-bit table).
    /// While recording, the gradients for a unit upstream gradient are formed chunk by chunk in the
    /// forward pass (the loss is the graph's end, so this costs no extra matmul), and backward
    /// scales them: the saved state is one [T, C] tensor (plus [V, C] if the weight trains).
    /// `meanOver`: the number of targets the mean divides by, when these rows are one rank's share of a sequence
    /// whose other targets other ranks score (docs/CONVENTIONS.md §17); else the targets counted here.
    public func lmHeadCrossEntropy(_ hidden: Variable, weight: HeadWeight, targets: [Int32],
                                   ignoreIndex: Int32 = -100, meanOver: Int? = nil, chunk: Int = 256) -> Variable {
        return Profile.time(.lmHeadLoss) {
            let (t, c) = (hidden.shape[0], hidden.shape[1])
            let v = weight.shape[0]
            precondition(weight.shape == [v, c] && targets.count == t,
                         "lmHeadCrossEntropy: hidden \(hidden.shape), weight \(weight.shape), \(targets.count) targets")
            let counted = CrossEntropyKernel.count(targets, ignoreIndex: ignoreIndex, vocab: v)
            let n = meanOver ?? counted
            let trained = weight.trained
            let wantH = needsGrad(hidden), wantW = needsGrad(trained)
            let dHidden = wantH ? Tensor(zeros: [t, c]) : nil
            let dWeight = wantW ? Tensor(zeros: [v, c]) : nil
            let rows = max(1, min(chunk, t))
            let z = Tensor(uninitialized: [rows, v])
            var total = 0.0
            for r0 in stride(from: 0, to: t, by: rows) {
                let nr = min(rows, t - r0)
                let h = hidden.value.data + r0 * c
                weight.logits(h, rows: nr, into: z.data)
                total += CrossEntropyKernel.block(z.data, rows: nr, v: v, targets: targets, base: r0,
                                                  ignoreIndex: ignoreIndex,
                                                  gradScale: (wantH || wantW) ? 1 / Float(n) : nil)
                if let dHidden { weight.inputGradient(z.data, rows: nr, into: dHidden.data + r0 * c) }   // dh = dz · W
                if let dWeight {   // dW += dzᵀ · h
                    BLAS.gemm(transA: true, m: v, n: c, k: nr, z.data, lda: v, h, ldb: c, beta: 1, dWeight.data, ldc: c)
                }
            }
            return output(Tensor(shape: [1], [Float(total / Double(n))]), [hidden, trained]) { out in
                let g = out.grad![0]
                if let dHidden { Vec.addScaled(hidden.gradBuffer().data, dHidden.data, g, dHidden.count) }
                if let dWeight, let trained { Vec.addScaled(trained.gradBuffer().data, dWeight.data, g, dWeight.count) }
            }
        }
    }
}
