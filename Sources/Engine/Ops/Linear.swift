/// Matrix products through cblas_sgemm. A frozen weight (requiresGrad false, or quantized) costs no weight-gradient
/// work.

extension Graph {
    /// op(a) · op(b) for 2-D tensors, op = transpose when asked. Shapes [M, K] · [K, N] -> [M, N].
    public func matmul(_ a: Variable, _ b: Variable, transposeA: Bool = false, transposeB: Bool = false) -> Variable {
        precondition(a.shape.count == 2 && b.shape.count == 2, "matmul: 2-D operands, got \(a.shape) and \(b.shape)")
        let m = transposeA ? a.shape[1] : a.shape[0]
        let k = transposeA ? a.shape[0] : a.shape[1]
        let kb = transposeB ? b.shape[1] : b.shape[0]
        let n = transposeB ? b.shape[0] : b.shape[1]
        precondition(k == kb, "matmul: inner sizes differ: \(a.shape)\(transposeA ? "ᵀ" : "") · "
                              + "\(b.shape)\(transposeB ? "ᵀ" : "")")
        let y = Tensor(uninitialized: [m, n])
        BLAS.gemm(a.value, transA: transposeA, b.value, transB: transposeB, into: y)
        return output(y, [a, b]) { out in
            let dy = out.grad!
            if a.requiresGrad {
                if transposeA {   // a is [K, M]: da = op(b) · dyᵀ
                    BLAS.gemm(b.value, transA: transposeB, dy, transB: true, beta: 1, into: a.gradBuffer())
                } else {          // da = dy · op(b)ᵀ
                    BLAS.gemm(dy, b.value, transB: !transposeB, beta: 1, into: a.gradBuffer())
                }
            }
            if b.requiresGrad {
                if transposeB {   // b is [N, K]: db = dyᵀ · op(a)
                    BLAS.gemm(dy, transA: true, a.value, transB: transposeA, beta: 1, into: b.gradBuffer())
                } else {          // db = op(a)ᵀ · dy
                    BLAS.gemm(a.value, transA: !transposeA, dy, beta: 1, into: b.gradBuffer())
                }
            }
        }
    }

    /// Batched op(a[i]) · op(b[i]) for 3-D tensors [B, M, K] · [B, K, N] -> [B, M, N].
    public func batchedMatmul(_ a: Variable, _ b: Variable, transposeA: Bool = false,
                              transposeB: Bool = false) -> Variable {
        precondition(a.shape.count == 3 && b.shape.count == 3 && a.shape[0] == b.shape[0],
                     "batchedMatmul: [B, M, K] · [B, K, N], got \(a.shape) and \(b.shape)")
        let batch = a.shape[0]
        let (ar, ac, br, bc) = (a.shape[1], a.shape[2], b.shape[1], b.shape[2])
        let m = transposeA ? ac : ar, k = transposeA ? ar : ac
        let kb = transposeB ? bc : br, n = transposeB ? br : bc
        precondition(k == kb, "batchedMatmul: inner sizes differ: \(a.shape) · \(b.shape)")
        let y = Tensor(uninitialized: [batch, m, n])
        for i in 0..<batch {
            BLAS.gemm(transA: transposeA, transB: transposeB, m: m, n: n, k: k,
                      a.value.data + i * ar * ac, lda: ac, b.value.data + i * br * bc, ldb: bc,
                      y.data + i * m * n, ldc: n)
        }
        return output(y, [a, b]) { out in
            let dy = out.grad!
            for i in 0..<batch {
                let pa = a.value.data + i * ar * ac, pb = b.value.data + i * br * bc, pd = dy.data + i * m * n
                if a.requiresGrad {
                    let ga = a.gradBuffer().data + i * ar * ac
                    if transposeA {
                        BLAS.gemm(transA: transposeB, transB: true, m: k, n: m, k: n, pb, lda: bc, pd, ldb: n,
                                  beta: 1, ga, ldc: ac)
                    } else {
                        BLAS.gemm(transB: !transposeB, m: m, n: k, k: n, pd, lda: n, pb, ldb: bc, beta: 1, ga, ldc: ac)
                    }
                }
                if b.requiresGrad {
                    let gb = b.gradBuffer().data + i * br * bc
                    if transposeB {
                        BLAS.gemm(transA: true, transB: transposeA, m: n, n: k, k: m, pd, lda: n, pa, ldb: ac,
                                  beta: 1, gb, ldc: bc)
                    } else {
                        BLAS.gemm(transA: !transposeA, m: k, n: n, k: m, pa, lda: ac, pd, ldb: n, beta: 1, gb, ldc: bc)
                    }
                }
            }
        }
    }

    /// y = x · Wᵀ + bias, as torch.nn.Linear: x [T, in], weight [out, in], bias [out] -> [T, out].
    public func linear(_ x: Variable, weight: Variable, bias: Variable? = nil) -> Variable {
        return Profile.time(weight.requiresGrad ? .loraProducts : .frozenProducts) {
            linear(x, weightShape: weight.shape, dense: { weight.value }, trained: weight, bias: bias)
        }
    }

    /// The same with W frozen in a compressed storage (QLoRA's NF4, GGUF blocks, bf16): W is dequantized into a
    /// transient fp32 tensor for the product, and again for the input gradient (docs/CONVENTIONS.md §14); or, with
    /// a bf16 compute dtype, into bf16 for the bf16 GEMM (§15).
    public func linear(_ x: Variable, quantized w: QuantizedMatrix, bias: Variable? = nil) -> Variable {
        return Profile.time(.frozenProducts) {
            if w.computeDType == .bf16 { return linearBF16(x, weight: w, bias: bias) }
            return linear(x, weightShape: w.shape, dense: { DequantizedWeights.dense(w) }, trained: nil, bias: bias)
        }
    }

    /// y = x · Wᵀ + bias in bf16 (docs/CONVENTIONS.md §15): x rounded to bf16, W's bf16 values, fp32 accumulation
    /// and result; the input gradient dx += dy · W likewise, dy rounded to bf16. W gets no gradient.
    private func linearBF16(_ x: Variable, weight w: QuantizedMatrix, bias: Variable?) -> Variable {
        let (t, inF, outF) = (x.shape[0], x.shape[1], w.shape[0])
        precondition(x.shape.count == 2 && w.shape == [outF, inF],
                     "linear: x \(x.shape) does not match weight \(w.shape) ([out, in])")
        let y = Tensor(uninitialized: [t, outF])
        if let bias {
            precondition(bias.shape == [outF], "linear: bias \(bias.shape) != [\(outF)]")
            for r in 0..<t { (y.data + r * outF).update(from: bias.value.data, count: outF) }
        }
        BF16.encode(x.value).withBits { xb in
            w.withBF16Values { wb in
                BF16GEMM.gemm(transB: true, m: t, n: outF, k: inF, xb, lda: inF, wb, ldb: inF,
                              accumulate: bias != nil, y.data, ldc: outF)
            }
        }
        return output(y, [x, bias]) { out in
            let dy = out.grad!
            if x.requiresGrad {
                let dx = x.gradBuffer()
                BF16.encode(dy).withBits { dyb in
                    w.withBF16Values { wb in
                        BF16GEMM.gemm(m: t, n: inF, k: outF, dyb, lda: outF, wb, ldb: inF, accumulate: true,
                                      dx.data, ldc: inF)
                    }
                }
            }
            if let bias, bias.requiresGrad {
                let gb = bias.gradBuffer().data
                for r in 0..<t { Vec.add(gb, dy.data + r * outF, outF) }
            }
        }
    }

    /// y = x · Wᵀ + bias with W from `dense()`; `trained` is W's variable when it can have a gradient.
    private func linear(_ x: Variable, weightShape: [Int], dense: @escaping () -> Tensor, trained: Variable?,
                        bias: Variable?) -> Variable {
        let (t, inF) = (x.shape[0], x.shape[1])
        let outF = weightShape[0]
        precondition(x.shape.count == 2 && weightShape == [outF, inF],
                     "linear: x \(x.shape) does not match weight \(weightShape) ([out, in])")
        let y = Tensor(uninitialized: [t, outF])
        if let bias {
            precondition(bias.shape == [outF], "linear: bias \(bias.shape) != [\(outF)]")
            for r in 0..<t { (y.data + r * outF).update(from: bias.value.data, count: outF) }
        }
        BLAS.gemm(x.value, dense(), transB: true, beta: bias == nil ? 0 : 1, into: y)
        return output(y, [x, trained, bias]) { out in
            let dy = out.grad!
            if x.requiresGrad { BLAS.gemm(dy, dense(), beta: 1, into: x.gradBuffer()) }
            if let trained, trained.requiresGrad {
                BLAS.gemm(dy, transA: true, x.value, beta: 1, into: trained.gradBuffer())
            }
            if let bias, bias.requiresGrad {
                let gb = bias.gradBuffer().data
                for r in 0..<t { Vec.add(gb, dy.data + r * outF, outF) }
            }
        }
    }
}
