/// The gated MLP activations, activation(gate) ⊙ up: SwiGLU (Llama: silu(g) = g·σ(g)) and GeGLU (Gemma's
/// `gelu_pytorch_tanh`: gelu(g) ≈ g/2 · (1 + tanh(√(2/π) · (g + 0.044715·g³)))). One kernel, specialised per
/// function.

/// The activation on the gate of a gated MLP, by its transformers name (`hidden_act`, Gemma's `hidden_activation`).
public enum GatedActivation: String, CaseIterable, Sendable {
    case silu
    case geluTanh = "gelu_pytorch_tanh"

    public init?(hfName: String) { self.init(rawValue: hfName) }
    public static var hfNames: [String] { allCases.map(\.rawValue) }
}

extension Graph {
    /// gate, up [T, I] -> activation(gate) ⊙ up [T, I].
    public func gated(_ activation: GatedActivation, gate: Variable, up: Variable) -> Variable {
        switch activation {
        case .silu: return swiglu(gate: gate, up: up)
        case .geluTanh: return geglu(gate: gate, up: up)
        }
    }

    /// gate, up [T, I] -> silu(gate) ⊙ up [T, I].
    public func swiglu(gate: Variable, up: Variable) -> Variable { gatedProduct(SiLU.self, gate: gate, up: up) }

    /// gate, up [T, I] -> gelu_tanh(gate) ⊙ up [T, I].
    public func geglu(gate: Variable, up: Variable) -> Variable { gatedProduct(GeluTanh.self, gate: gate, up: up) }

    /// f(gate) ⊙ up and its backward: d up = dy·f(gate), d gate = dy·up·f′(gate); 16 lanes at a time.
    func gatedProduct<F: GateFunction>(_ f: F.Type, gate: Variable, up: Variable) -> Variable {
        return Profile.time(.rowwise) {
            precondition(gate.shape == up.shape, "gated activation: gate \(gate.shape) and up \(up.shape) differ")
            let n = gate.value.count
            let y = Tensor(uninitialized: gate.shape)
            let g = gate.value.data, u = up.value.data
            Vec.run(n) { r in
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    Micro.store(F.value(Micro.load(g + i)) * Micro.load(u + i), y.data + i)
                    i += 16
                }
                for k in i..<r.upperBound { y.data[k] = F.value(Lanes16(repeating: g[k]))[0] * u[k] }
            }
            return output(y, [gate, up]) { out in
                let dy = out.grad!.data
                let dg = gate.requiresGrad ? gate.gradBuffer().data : nil
                let du = up.requiresGrad ? up.gradBuffer().data : nil
                Vec.run(n) { r in
                    var i = r.lowerBound
                    while i + 16 <= r.upperBound {
                        let (value, slope) = F.valueAndSlope(Micro.load(g + i))
                        let dyv = Micro.load(dy + i)
                        if let du { Micro.store(Micro.load(du + i) + dyv * value, du + i) }
                        if let dg { Micro.store(Micro.load(dg + i) + dyv * Micro.load(u + i) * slope, dg + i) }
                        i += 16
                    }
                    for k in i..<r.upperBound {
                        let (value, slope) = F.valueAndSlope(Lanes16(repeating: g[k]))
                        if let du { du[k] += dy[k] * value[0] }
                        if let dg { dg[k] += dy[k] * u[k] * slope[0] }
                    }
                }
            }
        }
    }
}

/// An activation on 16 lanes: its value, and value with derivative for the backward.
protocol GateFunction {
    static func value(_ x: Lanes16) -> Lanes16
    static func valueAndSlope(_ x: Lanes16) -> (Lanes16, Lanes16)
}

/// silu(x) = x·σ(x); silu′(x) = σ(x)·(1 + x·(1 − σ(x))).
enum SiLU: GateFunction {
    @inline(__always) static func value(_ x: Lanes16) -> Lanes16 { x / (1 + fastExp(-x)) }

    @inline(__always) static func valueAndSlope(_ x: Lanes16) -> (Lanes16, Lanes16) {
        let sig: Lanes16 = 1 / (1 + fastExp(-x))
        let slope: Lanes16 = sig * (1 + x * (1 - sig))
        return (x * sig, slope)
    }
}

/// gelu_tanh and its derivative; tanh(z) = 1 − 2/(e^{2z} + 1) through `fastExp`.
enum GeluTanh: GateFunction {
    static let k: Float = 0.797_884_560_802_865_4   // √(2/π)
    static let c: Float = 0.044_715
    static let one = Lanes16(repeating: 1), half = Lanes16(repeating: 0.5)

    @inline(__always) static func tanhInner(_ x: Lanes16) -> Lanes16 {
        let cubic: Lanes16 = one.addingProduct(Lanes16(repeating: c) * x, x)     // 1 + c·x²
        let z2: Lanes16 = Lanes16(repeating: 2 * k) * x * cubic                   // 2·√(2/π)·(x + c·x³)
        let e: Lanes16 = fastExp(z2)
        return one - Lanes16(repeating: 2) / (e + one)
    }

    @inline(__always) static func value(_ x: Lanes16) -> Lanes16 {
        let t: Lanes16 = tanhInner(x)
        return half * x * (one + t)
    }

    /// gelu(x) and d gelu/dx = (1 + t)/2 + x/2 · (1 − t²) · √(2/π) · (1 + 3·0.044715·x²).
    @inline(__always) static func valueAndSlope(_ x: Lanes16) -> (Lanes16, Lanes16) {
        let t: Lanes16 = tanhInner(x)
        let inner: Lanes16 = Lanes16(repeating: k) * one.addingProduct(Lanes16(repeating: 3 * c) * x, x)
        let sech2: Lanes16 = one - t * t
        let slope: Lanes16 = half * (one + t) + half * x * sech2 * inner
        return (half * x * (one + t), slope)
    }
}
