import Engine

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
        model.layers.flatMap { [$0.self_attn.q_proj, $0.self_attn.k_proj, $0.self_attn.v_proj, $0.self_attn.o_proj,
                                $0.mlp.gate_proj, $0.mlp.up_proj, $0.mlp.down_proj] }
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
