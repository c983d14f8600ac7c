extension Graph {
    /// Fused multi-head attention with grouped-query heads (see `FlashAttention`).
    /// q [T, heads·headDim], k and v [T, kvHeads·headDim] -> [T, heads·headDim].
    /// `scale` defaults to 1/√headDim; RoPE is applied to q and k before this op. `bf16`: the block products in
    /// bf16 (`FlashAttentionBF16`) where it applies, else fp32. `keyOnlyRows` r: rows 0..<r are keys and values
    /// only (a sequence-parallel halo, docs/CONVENTIONS.md §17): their output rows are zero and pass no gradient.
    public func attention(q: Variable, k: Variable, v: Variable, heads: Int, kvHeads: Int, headDim: Int,
                          layout: AttentionLayout, scale: Float? = nil, keyOnlyRows: Int = 0,
                          bf16: Bool = false) -> Variable {
        return Profile.time(.attentionForward) {
            let t = q.shape[0]
            precondition(heads % kvHeads == 0,
                         "attention: \(heads) query heads are not a multiple of \(kvHeads) KV heads")
            precondition(q.shape == [t, heads * headDim], "attention: q \(q.shape) != [\(t), \(heads * headDim)]")
            precondition(k.shape == [t, kvHeads * headDim] && v.shape == k.shape,
                         "attention: k \(k.shape) / v \(v.shape) != [\(t), \(kvHeads * headDim)]")
            precondition(layout.length == t && layout.heads == heads,
                         "attention: layout is for \(layout.length) tokens × \(layout.heads) heads")
            let shape = FlashAttention.Shape(length: t, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                             scale: scale ?? 1 / Float(headDim).squareRoot())
            let out = Tensor(uninitialized: [t, heads * headDim])
            let lse = Tensor(uninitialized: [heads, t])
            let inBF16 = bf16 && FlashAttentionBF16.applies(headDim: headDim)
            let skipped = min(keyOnlyRows, t) * heads * headDim
            // Key-only rows get no log-sum-exp: NaN, so that a kernel reading one would show it in every gradient.
            for h in 0..<heads { (lse.data + h * t).update(repeating: .nan, count: min(keyOnlyRows, t)) }
            FlashAttention.forward(q: q.value.data, k: k.value.data, v: v.value.data, shape: shape, layout: layout,
                                   out: out.data, lse: lse.data, keyOnlyRows: keyOnlyRows, bf16: inBF16)
            out.data.update(repeating: 0, count: skipped)
            return output(out, [q, k, v]) { y in
                y.grad!.data.update(repeating: 0, count: skipped)
                FlashAttention.backward(
                    q: q.value.data, k: k.value.data, v: v.value.data, out: y.value.data, lse: lse.data,
                    dout: y.grad!.data, shape: shape, layout: layout,
                    dq: q.requiresGrad ? q.gradBuffer().data : nil,
                    dk: k.requiresGrad ? k.gradBuffer().data : nil,
                    dv: v.requiresGrad ? v.gradBuffer().data : nil, keyOnlyRows: keyOnlyRows, bf16: inBF16)
            }
        }
    }
}
