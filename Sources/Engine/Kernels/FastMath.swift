/// Vectorized transcendental functions for the hot loops (softmax, SiLU).

public typealias F16x = SIMD16<Float>

// `replacing(with:where:)` on a comparison compiles to one vmaxps/vminps or a masked move; a NaN
// in `a` stays NaN (the comparison is false for it).
@inline(__always) func vmax(_ a: F16x, _ b: F16x) -> F16x { a.replacing(with: b, where: a .< b) }
@inline(__always) func vmin(_ a: F16x, _ b: F16x) -> F16x { a.replacing(with: b, where: b .< a) }

/// e^x for 16 lanes: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, then a degree-6 Taylor
/// polynomial (relative error < 2e-7). Lanes below −87.3 (including −∞) give exactly 0; NaN stays NaN.
@inline(__always)
public func fastExp(_ x: F16x) -> F16x {
    let xc = vmin(vmax(x, F16x(repeating: -87.3)), F16x(repeating: 88.3))
    // Round x·log2(e) to an integer n with the 1.5·2^23 trick: after the addition the low
    // mantissa bits of `t` hold n, so no float→int conversion is needed.
    let magic = F16x(repeating: 12_582_912)
    let t = magic.addingProduct(xc, F16x(repeating: 1.442_695_04))
    let n = t - magic
    var r = xc.addingProduct(n, F16x(repeating: -0.693_145_751_953_125))
    r = r.addingProduct(n, F16x(repeating: -1.428_606_765_330_187e-6))
    var p = F16x(repeating: 1.0 / 720)
    p = F16x(repeating: 1.0 / 120).addingProduct(p, r)
    p = F16x(repeating: 1.0 / 24).addingProduct(p, r)
    p = F16x(repeating: 1.0 / 6).addingProduct(p, r)
    p = F16x(repeating: 0.5).addingProduct(p, r)
    p = F16x(repeating: 1).addingProduct(p, r)
    p = F16x(repeating: 1).addingProduct(p, r)
    // 2^n: n sits in the low bits of t's pattern; shift it into the exponent field.
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: F16x.self)
    // Lanes below −87.3 (and −∞) get exactly 0.
    return (p * scale).replacing(with: 0, where: x .< F16x(repeating: -87.3))
}

/// Scalar e^x with the same algorithm (for tails and tests).
@inline(__always)
public func fastExp(_ x: Float) -> Float { fastExp(F16x(repeating: x))[0] }
