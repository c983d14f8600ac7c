import Engine
import Settings

/// How the frozen base is stored: the recipe's `model.quantization`.
public enum QuantizationKind: String, KnobChoice, Sendable {
    /// fp32, as loaded.
    case none
    /// QLoRA's 4-bit NormalFloat in blocks of 64, exactly as bitsandbytes stores it (docs/CONVENTIONS.md §14).
    case nf4
}

/// A quantized frozen base: which storage, and its options.
public struct Quantization: Equatable, Sendable {
    public var doubleQuant: Bool
    public var blockSize: Int

    public init(doubleQuant: Bool = true, blockSize: Int = 64) {
        self.doubleQuant = doubleQuant
        self.blockSize = blockSize
    }

    /// The recipe's choice: nil for `none`.
    public init?(_ kind: QuantizationKind, doubleQuant: Bool) {
        guard kind == .nf4 else { return nil }
        self.init(doubleQuant: doubleQuant)
    }

    /// Bytes a [rows, columns] matrix takes in this storage.
    public func storedBytes(shape: [Int]) -> Int {
        NF4Matrix.storedBytes(count: shape.reduce(1, *), blockSize: blockSize, doubleQuant: doubleQuant)
    }

    /// A short name: "nf4" or "nf4+dq".
    public var kind: String { doubleQuant ? "nf4+dq" : "nf4" }

    /// `weight` in NF4; `name` identifies the tensor in errors.
    public func quantize(_ weight: Tensor, name: String) throws -> NF4Matrix {
        try NF4Matrix.quantize(weight.data, shape: weight.shape, blockSize: blockSize, doubleQuant: doubleQuant,
                               name: name)
    }
}

extension LlamaForCausalLM {
    /// The projections a quantized base stores quantized: every linear module of the decoder layers, as
    /// transformers' bitsandbytes integration converts every nn.Linear except the LM head.
    public var quantizableLinears: [Linear] {
        model.layers.flatMap { ($0.self_attn.modules + $0.mlp.modules).compactMap { $0 as? Linear } }
    }

    /// Runs the frozen weights' products in `dtype` (`model.compute_dtype`, docs/CONVENTIONS.md §15). With bf16,
    /// each frozen projection is stored in bf16 (a quantized one keeps its storage and dequantizes into bf16); so
    /// are the embedding unless it is trained, the LM head tied to it, and an untied LM head; and attention's block
    /// products run in bf16 where the CPU has AVX512-BF16 (`FlashAttentionBF16`). Call once the trained
    /// tensors are marked (after `LoRAModel`): they, the adapters and the norms stay fp32.
    public func setComputeDType(_ dtype: ComputeDType) {
        guard dtype == .bf16 else { return }
        for lin in quantizableLinears { storeInBF16(lin) }
        for layer in model.layers {
            layer.self_attn.attentionInBF16 = FlashAttentionBF16.applies(headDim: config.headDim)
        }
        let e = model.embed_tokens
        if let table = e.frozen16 {
            e.frozen16 = table.dtype == .bf16 ? table : HalfMatrix(table.widened(), dtype: .bf16)
        } else if !e.weight.requiresGrad {
            e.frozen16 = HalfMatrix(e.weight.value, dtype: .bf16)
            e.weight.value = Tensor(zeros: [0, e.dimension])
        }
        e.frozen16?.computeDType = .bf16
        if !config.tieWordEmbeddings { storeInBF16(lm_head) }
        BufferCache.drain()   // the freed fp32 weights would otherwise stay cached for reuse
    }

    /// `lin`'s frozen weight in bf16 with bf16 products: a quantized one dequantizes into bf16, an fp32 one is
    /// rounded to bf16 once and its fp32 tensor freed.
    private func storeInBF16(_ lin: Linear) {
        if lin.quantized == nil {
            precondition(!lin.weight.requiresGrad, "\(lin.path).weight is trained: it stays fp32")
            lin.quantized = HalfMatrix(lin.weight.value, dtype: .bf16)
            lin.weight.value = Tensor(zeros: [0, lin.inFeatures])
        }
        lin.quantized!.computeDType = .bf16
    }

    /// The storage of the frozen projections in messages and bench output: "fp32", "bf16", "nf4+dq", "q8_0"…,
    /// with the compute dtype when it differs ("nf4+dq → bf16").
    public var frozenStorageName: String {
        guard let q = quantizableLinears.first?.quantized else { return "fp32" }
        return q.kind == q.computeDType.rawValue ? q.kind : "\(q.kind) → \(q.computeDType.rawValue)"
    }

    /// Bytes of the frozen weights kept quantized (0 for an fp32 base).
    public var quantizedBytes: Int { quantizableLinears.reduce(0) { $0 + ($1.quantized?.storedBytes ?? 0) } }

    /// Stores every quantizable projection as an all-zero quantized matrix and the embedding as an all-zero 16-bit
    /// table when asked (for memory probes: the same allocations as the real model, nothing quantized).
    public func quantizeAsZeros(_ q: Quantization, embedding16: Bool) {
        for lin in quantizableLinears {
            lin.quantized = NF4Matrix.zeros(shape: [lin.outFeatures, lin.inFeatures], blockSize: q.blockSize,
                                            doubleQuant: q.doubleQuant)
        }
        if embedding16 {
            let e = model.embed_tokens
            e.frozen16 = HalfMatrix(shape: [e.count, e.dimension], dtype: .bf16,
                                    bits: [UInt16](repeating: 0, count: e.count * e.dimension))
        }
    }

}
