import Settings

/// A frozen weight matrix kept in a compressed storage (QLoRA's NF4, a GGUF block type, bf16). Nothing trains it:
/// matrix products dequantize it into a transient matrix of its compute dtype, fp32 for sgemm
/// (docs/CONVENTIONS.md §14) or bf16 for the bf16 GEMM (§15), so its gradients are exactly those of the dense
/// matrix it dequantizes to.
public protocol QuantizedMatrix: AnyObject {
    /// [rows, columns] of the dense matrix (torch.nn.Linear's [out_features, in_features]).
    var shape: [Int] { get }
    /// Bytes held in memory: codes and scales.
    var storedBytes: Int { get }
    /// The storage's name in messages and bench output, e.g. "nf4" or "nf4+dq".
    var kind: String { get }
    /// Writes the dense matrix, row-major, into `out` (rows × columns floats).
    func dequantize(into out: UnsafeMutablePointer<Float>)
    /// What its products compute in: fp32, or bf16 (`model.compute_dtype`, docs/CONVENTIONS.md §15).
    var computeDType: ComputeDType { get set }
    /// Calls `body` with the dense matrix in bf16, row-major: the fp32 values rounded to nearest even, as torch's
    /// `.to(bfloat16)` (a transient copy, reused within a `DequantizedWeights.reused` scope).
    func withBF16Values(_ body: (UnsafePointer<UInt16>) -> Void)
}

/// The dtype the frozen weights' matrix products run in (`model.compute_dtype`, docs/CONVENTIONS.md §15).
public enum ComputeDType: String, KnobChoice, Sendable {
    /// fp32 operands, sgemm.
    case fp32
    /// bf16 operands (frozen weights stored in bf16, activations rounded to bf16), fp32 accumulation and result.
    case bf16
}

extension QuantizedMatrix {
    /// The dense matrix in a fresh tensor (recycled through the buffer cache when freed).
    public func dequantized() -> Tensor {
        let t = Tensor(uninitialized: shape)
        dequantize(into: t.data)
        return t
    }

    public func withBF16Values(_ body: (UnsafePointer<UInt16>) -> Void) {
        DequantizedWeights.bf16(self).withBits { body($0) }
    }

    /// The dense matrix rounded to bf16, in a fresh buffer.
    public func bf16Values() -> BF16Buffer { BF16.encode(dequantized()) }
}

/// Dense copies of quantized matrices kept while a scope runs: the row slices of one layer's MLP multiply by the
/// same weights once per slice, and dequantizing each matrix once per scope keeps the slices as fast as the whole.
/// Outside a scope every product dequantizes afresh (and frees the copy after it).
public enum DequantizedWeights {
    nonisolated(unsafe) private static var cache: [ObjectIdentifier: Tensor]?
    nonisolated(unsafe) private static var cacheBF16: [ObjectIdentifier: BF16Buffer] = [:]

    /// Runs `body` with dequantized matrices reused until it returns (nested scopes share the outer one).
    public static func reused(_ body: () -> Void) {
        guard cache == nil else { return body() }
        cache = [:]
        defer { cache = nil; cacheBF16 = [:] }
        body()
    }

    /// `w` in fp32: the scope's copy, or a fresh one.
    static func dense(_ w: QuantizedMatrix) -> Tensor {
        guard cache != nil else { return w.dequantized() }
        if let t = cache![ObjectIdentifier(w)] { return t }
        let t = w.dequantized()
        cache![ObjectIdentifier(w)] = t
        return t
    }

    /// `w` in bf16: the scope's copy, or a fresh one.
    static func bf16(_ w: QuantizedMatrix) -> BF16Buffer {
        guard cache != nil else { return w.bf16Values() }
        if let t = cacheBF16[ObjectIdentifier(w)] { return t }
        let t = w.bf16Values()
        cacheBF16[ObjectIdentifier(w)] = t
        return t
    }
}
