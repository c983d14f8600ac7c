/// Vectorized transcendental functions for the hot loops (softmax, SiLU).

public typealias F16x = SIMD16<Float>

/// e^x for 16 lanes: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, then a degree-6 Taylor
/// polynomial (relative error < 2e-7). Lanes below −87.3 (including −∞) give exactly 0.
@inline(__always)
public func fastExp(_ x: F16x) -> F16x {
    let xc = x.clamped(lowerBound: F16x(repeating: -87.3), upperBound: F16x(repeating: 88.7))
    let n = (xc * 1.442_695_04).rounded(.toNearestOrEven)
    var r = xc.addingProduct(n, F16x(repeating: -0.693_145_751_953_125))
    r = r.addingProduct(n, F16x(repeating: -1.428_606_765_330_187e-6))
    var p = F16x(repeating: 1.0 / 720)
    p = F16x(repeating: 1.0 / 120).addingProduct(p, r)
    p = F16x(repeating: 1.0 / 24).addingProduct(p, r)
    p = F16x(repeating: 1.0 / 6).addingProduct(p, r)
    p = F16x(repeating: 0.5).addingProduct(p, r)
    p = F16x(repeating: 1).addingProduct(p, r)
    p = F16x(repeating: 1).addingProduct(p, r)
    let bits = (SIMD16<Int32>(n) &+ 127) &<< 23
    var y = p * unsafeBitCast(bits, to: F16x.self)
    y.replace(with: 0, where: x .< -87.3)
    return y
}

/// Scalar e^x with the same algorithm (for tails and tests).
@inline(__always)
public func fastExp(_ x: Float) -> Float { fastExp(F16x(repeating: x))[0] }
