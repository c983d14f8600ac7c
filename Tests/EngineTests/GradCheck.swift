import Engine
import TestSupport
import XCTest

/// Compares the tape's gradients of Σ R ⊙ f(inputs) (R fixed random) with central differences.
/// Inputs listed in `frozen` get requiresGrad false and are checked to receive no gradient.
func checkGradients(_ inputs: [Tensor], frozen: Set<Int> = [], eps: Float = 1e-2, rtol: Float = 2e-2, atol: Float = 2e-3,
                    file: StaticString = #filePath, line: UInt = #line,
                    _ f: @escaping (Graph, [Variable]) -> Variable) {
    var rng = SplitMix64(seed: 99)
    let g = Graph()
    let vars = inputs.enumerated().map { Variable($1, requiresGrad: !frozen.contains($0)) }
    let y = f(g, vars)
    let r = Tensor(shape: y.shape, uniform: -1, 1, rng: &rng)
    g.backward(y, seed: r)

    func objective() -> Double {
        let out = f(Graph(recording: false), inputs.map { Variable($0) }).value
        var s = 0.0
        for i in 0..<out.count { s += Double(out[i]) * Double(r[i]) }
        return s
    }
    for (n, x) in inputs.enumerated() {
        if frozen.contains(n) {
            XCTAssertNil(vars[n].grad, "frozen input \(n) received a gradient", file: file, line: line)
            continue
        }
        guard let analytic = vars[n].grad else {
            XCTFail("input \(n) received no gradient", file: file, line: line); continue
        }
        // Check every element of small inputs, a sample of large ones.
        let picks = x.count <= 64 ? Array(0..<x.count) : (0..<48).map { _ in Int(rng.next() % UInt64(x.count)) }
        for i in picks {
            let saved = x[i]
            x[i] = saved + eps; let up = objective()
            x[i] = saved - eps; let down = objective()
            x[i] = saved
            let numeric = Float((up - down) / Double(2 * eps))
            let a = analytic[i]
            XCTAssertLessThanOrEqual(abs(a - numeric), atol + rtol * abs(numeric),
                                     "input \(n)[\(i)]: analytic \(a) vs numeric \(numeric)", file: file, line: line)
        }
    }
}

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SplitMix64(seed: seed)
    return Tensor(shape: shape, uniform: -scale, scale, rng: &rng)
}
