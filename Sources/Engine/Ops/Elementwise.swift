/// Element-wise ops: add, mul, scale, sum, mean. Forward and backward side by side.

/// Vector helpers shared by the ops; split across cores above `parallelThreshold` elements.
enum Vec {
    static let parallelThreshold = 1 << 16

    @inline(__always) static func run(_ n: Int, _ body: (Range<Int>) -> Void) {
        if n < parallelThreshold { body(0..<n) } else { Parallel.chunks(n, minChunk: 1 << 14, body) }
    }

    /// dst += a
    static func add(_ dst: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ n: Int) {
        run(n) { r in for i in r { dst[i] += a[i] } }
    }

    /// dst += s · a
    static func addScaled(_ dst: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ s: Float, _ n: Int) {
        run(n) { r in for i in r { dst[i] = dst[i].addingProduct(s, a[i]) } }
    }

    /// dst += a ⊙ b
    static func addProduct(_ dst: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ n: Int) {
        run(n) { r in for i in r { dst[i] = dst[i].addingProduct(a[i], b[i]) } }
    }
}

extension Graph {
    /// a + b (same shape).
    public func add(_ a: Variable, _ b: Variable) -> Variable {
        return Profile.time(.rowwise) {
            precondition(a.shape == b.shape, "add: shapes \(a.shape) and \(b.shape) differ")
            let y = a.value.copy()
            Vec.add(y.data, b.value.data, y.count)
            return output(y, [a, b]) { out in
                let dy = out.grad!
                for x in [a, b] where x.requiresGrad { Vec.add(x.gradBuffer().data, dy.data, dy.count) }
            }
        }
    }

    /// a ⊙ b (same shape).
    public func mul(_ a: Variable, _ b: Variable) -> Variable {
        return Profile.time(.rowwise) {
            precondition(a.shape == b.shape, "mul: shapes \(a.shape) and \(b.shape) differ")
            let y = Tensor(uninitialized: a.shape)
            let (pa, pb) = (a.value.data, b.value.data)
            Vec.run(y.count) { r in for i in r { y.data[i] = pa[i] * pb[i] } }
            return output(y, [a, b]) { out in
                let dy = out.grad!
                if a.requiresGrad { Vec.addProduct(a.gradBuffer().data, dy.data, pb, dy.count) }
                if b.requiresGrad { Vec.addProduct(b.gradBuffer().data, dy.data, pa, dy.count) }
            }
        }
    }

    /// s · a
    public func scale(_ a: Variable, _ s: Float) -> Variable {
        return Profile.time(.rowwise) {
            let y = Tensor(uninitialized: a.shape)
            Vec.run(y.count) { r in for i in r { y.data[i] = s * a.value.data[i] } }
            return output(y, [a]) { out in
                Vec.addScaled(a.gradBuffer().data, out.grad!.data, s, out.grad!.count)
            }
        }
    }

    /// Σ a, a scalar of shape [1].
    public func sum(_ a: Variable) -> Variable {
        var acc = 0.0
        for i in 0..<a.value.count { acc += Double(a.value.data[i]) }
        return output(Tensor(shape: [1], [Float(acc)]), [a]) { out in
            let g = out.grad![0], ga = a.gradBuffer()
            for i in 0..<ga.count { ga.data[i] += g }
        }
    }

    /// Mean of all elements, a scalar of shape [1].
    public func mean(_ a: Variable) -> Variable {
        scale(sum(a), 1 / Float(a.value.count))
    }
}
