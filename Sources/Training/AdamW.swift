import Engine
import Foundation

/// AdamW (Loshchilov & Hutter; torch.optim.AdamW): decoupled weight decay and bias correction.
///   m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g² ;  p ← p − lr·wd·p − lr·m̂/(√v̂ + ε)
public final class AdamW {
    public struct Group {
        public var parameters: [(String, Variable)]
        public var lr: Double
        public var weightDecay: Double
        public init(parameters: [(String, Variable)], lr: Double, weightDecay: Double) {
            self.parameters = parameters; self.lr = lr; self.weightDecay = weightDecay
        }
    }
    public var groups: [Group]
    public let beta1: Double, beta2: Double, eps: Double
    public private(set) var step = 0
    /// First and second moments by parameter name.
    public private(set) var m: [String: Tensor] = [:]
    public private(set) var v: [String: Tensor] = [:]

    public init(groups: [Group], beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8) {
        self.groups = groups; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        for g in groups { for (n, p) in g.parameters { m[n] = Tensor(zeros: p.shape); v[n] = Tensor(zeros: p.shape) } }
    }

    /// Applies one update with each group's learning rate times `lrScale` (the schedule), then
    /// clears the gradients. Parameters without a gradient this step still decay and move by their momentum.
    public func update(lrScale: Double = 1) {
        Profile.time(.optimizer) {
            step += 1
            let bc1 = 1 - Foundation.pow(beta1, Double(step)), bc2 = 1 - Foundation.pow(beta2, Double(step))
            let b1 = Float(beta1), b2 = Float(beta2), e = Float(eps)
            for g in groups {
                let lr = g.lr * lrScale
                let decay = Float(1 - lr * g.weightDecay)
                let stepSize = Float(lr / bc1), rbc2 = Float(1 / bc2.squareRoot())
                for (n, p) in g.parameters {
                    let mt = m[n]!, vt = v[n]!, w = p.value.data
                    let grad = p.grad?.data
                    Parallel.chunks(p.value.count, minChunk: 1 << 14) { r in
                        for i in r {
                            let gi = grad?[i] ?? 0
                            mt.data[i] = b1 * mt.data[i] + (1 - b1) * gi
                            vt.data[i] = b2 * vt.data[i] + (1 - b2) * gi * gi
                            w[i] = w[i] * decay - stepSize * mt.data[i] / (vt.data[i].squareRoot() * rbc2 + e)
                        }
                    }
                    p.grad = nil
                }
            }
        }
    }

    /// Restores moments and the step count (checkpoint resume).
    public func restore(step: Int, m: [String: Tensor], v: [String: Tensor]) {
        self.step = step; self.m = m; self.v = v
    }
}

/// Global L2 norm of the gradients; scales them to `maxNorm` when above it. Returns the norm before clipping.
@discardableResult
public func clipGradients(_ params: [(String, Variable)], maxNorm: Double?) -> Double {
    return Profile.time(.optimizer) {
        var ss = 0.0
        for (_, p) in params {
            if let g = p.grad { for i in 0..<g.count { ss += Double(g.data[i]) * Double(g.data[i]) } }
        }
        let norm = ss.squareRoot()
        if let maxNorm, norm > maxNorm {
            let s = Float(maxNorm / (norm + 1e-6))
            for (_, p) in params { if let g = p.grad { for i in 0..<g.count { g.data[i] *= s } } }
        }
        return norm
    }
}
