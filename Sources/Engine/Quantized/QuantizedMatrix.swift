/// A frozen weight matrix kept in a compressed storage (QLoRA's NF4). Nothing trains it: matrix
/// products dequantize it into a transient fp32 tensor and run sgemm on that (docs/CONVENTIONS.md §14),
/// so its gradients are exactly those of the dense matrix it dequantizes to.
public protocol QuantizedMatrix: AnyObject {
    /// [rows, columns] of the dense matrix (torch.nn.Linear's [out_features, in_features]).
    var shape: [Int] { get }
    /// Bytes held in memory: codes and scales.
    var storedBytes: Int { get }
    /// The storage's name in messages and bench output, e.g. "nf4" or "nf4+dq".
    var kind: String { get }
    /// Writes the dense matrix, row-major, into `out` (rows × columns floats).
    func dequantize(into out: UnsafeMutablePointer<Float>)
}

extension QuantizedMatrix {
    /// The dense matrix in a fresh tensor (recycled through the buffer cache when freed).
    public func dequantized() -> Tensor {
        let t = Tensor(uninitialized: shape)
        dequantize(into: t.data)
        return t
    }
}

/// Dense copies of quantized matrices kept while a scope runs: the row slices of one layer's MLP multiply by the
/// same weights once per slice, and dequantizing each matrix once per scope keeps the slices as fast as the whole.
/// Outside a scope every product dequantizes afresh (and frees the copy after it).
public enum DequantizedWeights {
    nonisolated(unsafe) private static var cache: [ObjectIdentifier: Tensor]?

    /// Runs `body` with dequantized matrices reused until it returns (nested scopes share the outer one).
    public static func reused(_ body: () -> Void) {
        guard cache == nil else { return body() }
        cache = [:]
        defer { cache = nil }
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
}
