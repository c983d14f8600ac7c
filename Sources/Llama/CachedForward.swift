import Engine

// The decoder run on a KV cache, a chunk of new tokens at a time (generation and streaming
// evaluation; docs/CONVENTIONS.md §11). The same modules as training, forward only; attention reads
// the cache instead of the sequence.

extension LlamaAttention {
    func callAsFunction(_ g: Graph, _ x: Variable, cache: KVCache, layer: Int, step: KVCache.Step) -> Variable {
        let (q, k, v) = projections(g, x)                            // [c, H·D], [c, Hkv·D], [c, Hkv·D]
        let shape = CachedAttention.Shape(heads: heads, kvHeads: kvHeads, headDim: headDim, scale: scale)
        let a = cache.attend(layer: layer, q: q.value, k: k.value, v: v.value, step: step.forLayer(local: isLocal),
                             shape: shape)
        return o_proj(g, Variable(a))                                                    // [c, C]
    }
}

extension LlamaDecoderLayer {
    func callAsFunction(_ g: Graph, _ x: Variable, cache: KVCache, layer: Int, step: KVCache.Step) -> Variable {
        mlpBlock(g, residualAttention(g, x) { self.self_attn(g, $0, cache: cache, layer: layer, step: step) })
    }
}

extension LlamaForCausalLM {
    /// Runs the next tokens of the stream through the model on `cache` (which then holds them as its
    /// policy says) and returns their final hidden states [count, C].
    public func forward(_ ids: [Int32], cache: KVCache) throws -> Tensor {
        guard !ids.isEmpty else { throw LongTuneError("forward: no tokens") }
        try checkTokens(ids)
        let step = cache.prepare(count: ids.count, model: self)
        let g = Graph(recording: false)
        var h = model.embed(g, ids)                                                     // [c, C]
        for (l, layer) in model.layers.enumerated() { h = layer(g, h, cache: cache, layer: l, step: step) }
        cache.commit(step)
        return model.norm(g, h).value
    }

    /// Next-token logits [V] of one row of final hidden states.
    public func logits(hidden: Tensor, row: Int) -> [Float] {
        var out = [Float](repeating: 0, count: config.vocabSize)
        out.withUnsafeMutableBufferPointer {
            headWeight.logits(hidden.data + row * config.hiddenSize, rows: 1, into: $0.baseAddress!)
        }
        return out
    }

    /// A cache for this model.
    public func makeCache(_ policy: CachePolicy = .everything) -> KVCache { KVCache(config: config, policy: policy) }
}
