/// A frozen matrix kept in a 16-bit dtype (fp16 or bf16), half the bytes of fp32: a QLoRA base's token embedding
/// (and LM head when tied), kept in the dtype its checkpoint stores (lossless, docs/CONVENTIONS.md §14); and with
/// `model.compute_dtype: bf16` every frozen weight, in bf16, whose products then run in bf16 (§15).
public final class HalfMatrix: QuantizedMatrix {
    public let shape: [Int]
    public let dtype: DType
    public let bits: [UInt16]
    /// fp32: products widen the values to fp32 (sgemm); bf16 (dtype bf16 only): products read them as they are.
    public var computeDType = ComputeDType.fp32 {
        didSet { precondition(computeDType == .fp32 || dtype == .bf16, "HalfMatrix: bf16 compute needs bf16 values") }
    }

    public init(shape: [Int], dtype: DType, bits: [UInt16]) {
        precondition(dtype != .fp32 && bits.count == shape.reduce(1, *),
                     "HalfMatrix: \(bits.count) values, shape \(shape)")
        self.shape = shape
        self.dtype = dtype
        self.bits = bits
    }

    /// `t` rounded to `dtype` (lossless when t came from that dtype).
    public convenience init(_ t: Tensor, dtype: DType) {
        var bits = [UInt16](repeating: 0, count: t.count)
        encodeHalf(t.data, &bits, count: t.count, dtype: dtype)
        self.init(shape: t.shape, dtype: dtype, bits: bits)
    }

    public var storedBytes: Int { 2 * bits.count }

    public var kind: String { dtype.rawValue }

    public func dequantize(into out: UnsafeMutablePointer<Float>) {
        bits.withUnsafeBufferPointer { b in
            if dtype == .bf16 { return BF16.decode(b.baseAddress!, out, count: b.count) }
            decodeHalf(b.baseAddress!, out, count: b.count, dtype: dtype)
        }
    }

    /// A bf16 matrix is read as it is; an fp16 one is widened and rounded to bf16.
    public func withBF16Values(_ body: (UnsafePointer<UInt16>) -> Void) {
        guard dtype == .bf16 else { return DequantizedWeights.bf16(self).withBits { body($0) } }
        bits.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Rows `ids` widened to fp32, [ids.count, columns].
    public func rows(_ ids: [Int32]) -> Tensor {
        let c = shape[1]
        let y = Tensor(uninitialized: [ids.count, c])
        bits.withUnsafeBufferPointer { b in
            Parallel.chunks(ids.count, minChunk: 64) { range in
                for r in range { decodeHalf(b.baseAddress! + Int(ids[r]) * c, y.data + r * c, count: c, dtype: dtype) }
            }
        }
        return y
    }

    /// The whole table in fp32.
    public func widened() -> Tensor { dequantized() }
}

extension Graph {
    /// Rows of a frozen 16-bit table, widened to fp32; no gradient flows to the table.
    public func embedding(_ ids: [Int32], frozen table: HalfMatrix) -> Variable {
        Self.checkIDs(ids, vocabulary: table.shape[0])
        return Variable(table.rows(ids))
    }
}
