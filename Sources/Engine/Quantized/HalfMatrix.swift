/// A frozen table kept in the 16-bit dtype it was stored in (fp16 or bf16): a QLoRA base's token
/// embedding (and LM head when tied), which would otherwise take 4 bytes per value (docs/CONVENTIONS.md §14). Lossless: the values are
/// exactly the checkpoint's.
public final class HalfMatrix {
    public let shape: [Int]
    public let dtype: DType
    public let bits: [UInt16]

    public init(shape: [Int], dtype: DType, bits: [UInt16]) {
        precondition(dtype != .fp32 && bits.count == shape.reduce(1, *), "HalfMatrix: \(bits.count) values, shape \(shape)")
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
    public func widened() -> Tensor {
        let t = Tensor(uninitialized: shape)
        bits.withUnsafeBufferPointer { decodeHalf($0.baseAddress!, t.data, count: t.count, dtype: dtype) }
        return t
    }
}

extension Graph {
    /// Rows of a frozen 16-bit table, widened to fp32; no gradient flows to the table.
    public func embedding(_ ids: [Int32], frozen table: HalfMatrix) -> Variable {
        Self.checkIDs(ids, vocabulary: table.shape[0])
        return Variable(table.rows(ids))
    }
}
