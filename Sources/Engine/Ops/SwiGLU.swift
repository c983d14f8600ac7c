import Foundation

/// The Llama MLP's activation: silu(gate) ⊙ up, with silu(g) = g·σ(g).

extension Graph {
    /// gate, up [T, I] -> [T, I].
    public func swiglu(gate: Variable, up: Variable) -> Variable {
        return Profile.time(.rowwise) {
            precondition(gate.shape == up.shape, "swiglu: gate \(gate.shape) and up \(up.shape) differ")
            let n = gate.value.count
            let y = Tensor(uninitialized: gate.shape)
            let g = gate.value.data, u = up.value.data
            Vec.run(n) { r in
                var i = r.lowerBound
                while i + 16 <= r.upperBound {
                    let gv = Micro.load(g + i)
                    Micro.store(gv / (1 + fastExp(-gv)) * Micro.load(u + i), y.data + i)
                    i += 16
                }
                for k in i..<r.upperBound { y.data[k] = g[k] / (1 + fastExp(-g[k])) * u[k] }
            }
            return output(y, [gate, up]) { out in
                let dy = out.grad!.data
                let dg = gate.requiresGrad ? gate.gradBuffer().data : nil
                let du = up.requiresGrad ? up.gradBuffer().data : nil
                Vec.run(n) { r in
                    var i = r.lowerBound
                    while i + 16 <= r.upperBound {
                        let gv = Micro.load(g + i), dyv = Micro.load(dy + i)
                        let sig = 1 / (1 + fastExp(-gv))
                        if let du { Micro.store(Micro.load(du + i) + dyv * gv * sig, du + i) }
                        if let dg {
                            Micro.store(Micro.load(dg + i) + dyv * Micro.load(u + i) * sig * (1 + gv * (1 - sig)),
                                        dg + i)
                        }
                        i += 16
                    }
                    for k in i..<r.upperBound {
                        let sig = 1 / (1 + fastExp(-g[k]))
                        if let du { du[k] += dy[k] * g[k] * sig }
                        if let dg { dg[k] += dy[k] * u[k] * sig * (1 + g[k] * (1 - sig)) }
                    }
                }
            }
        }
    }
}
