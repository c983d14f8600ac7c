/// Vectorized transcendental functions for the hot loops (softmax, SiLU).

/// One AVX-512 register: 16 fp32 lanes.
public typealias Lanes16 = SIMD16<Float>

// `replacing(with:where:)` on a comparison compiles to one vmaxps/vminps or a masked move; a NaN
// in `a` stays NaN (the comparison is false for it).
@inline(__always) func vmax(_ a: Lanes16, _ b: Lanes16) -> Lanes16 { a.replacing(with: b, where: a .< b) }
@inline(__always) func vmin(_ a: Lanes16, _ b: Lanes16) -> Lanes16 { a.replacing(with: b, where: b .< a) }

/// e^x for 16 lanes: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, then a degree-6 Taylor
/// polynomial (relative error < 2e-7). Lanes below −87.3 (including −∞) give exactly 0; NaN stays NaN.
@inline(__always)
public func fastExp(_ x: Lanes16) -> Lanes16 {
    let xc = vmin(vmax(x, Lanes16(repeating: -87.3)), Lanes16(repeating: 88.3))
    // Round x·log2(e) to an integer n with the 1.5·2^23 trick: after the addition the low
    // mantissa bits of `t` hold n, so no float→int conversion is needed.
    let magic = Lanes16(repeating: 12_582_912)
    let t = magic.addingProduct(xc, Lanes16(repeating: 1.442_695_04))
    let n = t - magic
    var r = xc.addingProduct(n, Lanes16(repeating: -0.693_145_751_953_125))
    r = r.addingProduct(n, Lanes16(repeating: -1.428_606_765_330_187e-6))
    var p = Lanes16(repeating: 1.0 / 720)
    p = Lanes16(repeating: 1.0 / 120).addingProduct(p, r)
    p = Lanes16(repeating: 1.0 / 24).addingProduct(p, r)
    p = Lanes16(repeating: 1.0 / 6).addingProduct(p, r)
    p = Lanes16(repeating: 0.5).addingProduct(p, r)
    p = Lanes16(repeating: 1).addingProduct(p, r)
    p = Lanes16(repeating: 1).addingProduct(p, r)
    // 2^n: n sits in the low bits of t's pattern; shift it into the exponent field.
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: Lanes16.self)
    // Lanes below −87.3 (and −∞) get exactly 0.
    return (p * scale).replacing(with: 0, where: x .< Lanes16(repeating: -87.3))
}

/// Scalar e^x with the same algorithm (for tails and tests).
@inline(__always)
public func fastExp(_ x: Float) -> Float { fastExp(Lanes16(repeating: x))[0] }
