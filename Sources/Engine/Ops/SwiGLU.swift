import Foundation

/// The Llama MLP's activation: silu(gate) ⊙ up, with silu(g) = g·σ(g).

extension Graph {
    /// gate, up [T, I] -> [T, I].
    public func swiglu(gate: Variable, up: Variable) -> Variable {
        precondition(gate.shape == up.shape, "swiglu: gate \(gate.shape) and up \(up.shape) differ")
        let n = gate.value.count
        let y = Tensor(uninitialized: gate.shape)
        let g = gate.value.data, u = up.value.data
        Vec.run(n) { r in
            for i in r { y.data[i] = g[i] / (1 + expf(-g[i])) * u[i] }
        }
        return output(y, [gate, up]) { out in
            let dy = out.grad!.data
            let dg = gate.requiresGrad ? gate.gradBuffer().data : nil
            let du = up.requiresGrad ? up.gradBuffer().data : nil
            Vec.run(n) { r in
                for i in r {
                    let sig = 1 / (1 + expf(-g[i]))
                    if let du { du[i] += dy[i] * g[i] * sig }
                    if let dg { dg[i] += dy[i] * u[i] * sig * (1 + g[i] * (1 - sig)) }
                }
            }
        }
    }
}
