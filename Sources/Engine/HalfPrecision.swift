/// fp16 and bf16 storage formats. Compute is always fp32; these convert with round-to-nearest-even,
/// keeping subnormals, infinities and NaN (NaN stays NaN, quiet, with its sign).
public enum DType: String, Codable, Sendable, CaseIterable {
    case fp32, fp16, bf16

    public var byteSize: Int { self == .fp32 ? 4 : 2 }

    /// Names used by safetensors headers.
    public var safetensorsName: String {
        switch self { case .fp32: "F32"; case .fp16: "F16"; case .bf16: "BF16" }
    }

    /// Names used by config.json's `torch_dtype`.
    public var torchName: String {
        switch self { case .fp32: "float32"; case .fp16: "float16"; case .bf16: "bfloat16" }
    }

    /// The dtype a safetensors header names (F32, F16, BF16), nil for any other.
    public init?(safetensorsName name: String) {
        guard let d = Self.allCases.first(where: { $0.safetensorsName == name }) else { return nil }
        self = d
    }

    /// The dtype torch names (float32, float16, bfloat16), nil for any other.
    public init?(torchName name: String) {
        guard let d = Self.allCases.first(where: { $0.torchName == name }) else { return nil }
        self = d
    }
}

@inline(__always) public func bf16Bits(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: b >> 16) | 0x0040 }
    // Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry into the exponent
    // correctly rounds the largest finite values up to infinity.
    let rounded = b &+ 0x7FFF &+ ((b >> 16) & 1)
    return UInt16(truncatingIfNeeded: rounded >> 16)
}

@inline(__always) public func floatFromBF16(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

@inline(__always) public func fp16Bits(_ x: Float) -> UInt16 {
    // Swift's Float16 conversion is IEEE round-to-nearest-even (F16C's vcvtps2ph on x86).
    Float16(x).bitPattern
}

@inline(__always) public func floatFromFP16(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}

/// Converts `count` floats to 16-bit patterns of `dtype` (fp16 or bf16).
public func encodeHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int, dtype: DType) {
    switch dtype {
    case .fp16: for i in 0..<count { dst[i] = fp16Bits(src[i]) }
    case .bf16: for i in 0..<count { dst[i] = bf16Bits(src[i]) }
    case .fp32: preconditionFailure("encodeHalf: fp32 is not a 16-bit type")
    }
}

/// Converts `count` 16-bit patterns of `dtype` (fp16 or bf16) to floats.
public func decodeHalf(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int, dtype: DType) {
    switch dtype {
    case .fp16: for i in 0..<count { dst[i] = floatFromFP16(src[i]) }
    case .bf16: for i in 0..<count { dst[i] = floatFromBF16(src[i]) }
    case .fp32: preconditionFailure("decodeHalf: fp32 is not a 16-bit type")
    }
}

/// Rounds every element through `dtype` and back (what storing in that type loses).
public func roundTrip(_ t: Tensor, through dtype: DType) {
    switch dtype {
    case .fp32: return
    case .fp16: for i in 0..<t.count { t.data[i] = floatFromFP16(fp16Bits(t.data[i])) }
    case .bf16: for i in 0..<t.count { t.data[i] = floatFromBF16(bf16Bits(t.data[i])) }
    }
}
