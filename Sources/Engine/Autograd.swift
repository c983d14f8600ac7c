/// A value in the computation graph. Leaves are parameters or inputs; `grad` accumulates
/// d(loss)/d(value) during `Graph.backward`. Frozen parameters (`requiresGrad == false`) never get
/// a gradient buffer, and ops skip the work of computing one.
public final class Variable {
    public var value: Tensor
    public var grad: Tensor?
    public var requiresGrad: Bool
    public var name: String

    public init(_ value: Tensor, requiresGrad: Bool = false, name: String = "") {
        self.value = value
        self.requiresGrad = requiresGrad
        self.name = name
    }

    public var shape: [Int] { value.shape }

    /// The gradient buffer, created zero-filled on first use.
    public func gradBuffer() -> Tensor {
        if let g = grad { return g }
        let g = Tensor(zeros: value.shape)
        grad = g
        return g
    }

    public func zeroGrad() { grad = nil }
}

/// A reverse-mode tape. Each op appends its backward closure while recording; `backward` runs them
/// in reverse order. A graph created with `recording: false` (evaluation) records nothing and keeps
/// no intermediate values alive.
public final class Graph {
    /// Called in a checkpoint's backward once its row-wise tail has been replayed, before the body's backward:
    /// memory probes (`longtune plan`) read the peak of the two phases apart, because the tail's slices have a
    /// fixed size while the body's backward grows with the length.
    nonisolated(unsafe) public static var afterRowwiseTail: (() -> Void)?

    public let isRecording: Bool
    /// The sequence position of row 0 of this graph's tensors: 0, except in the graphs of a row slice (`rowwise`,
    /// a checkpoint's row-wise tail). Whatever depends on a token's position (LoRA's dropout mask) reads it, so a
    /// slice computes exactly what the whole would for its rows.
    public let firstRow: Int
    private var backwards: [() -> Void] = []

    public init(recording: Bool = true, firstRow: Int = 0) {
        self.isRecording = recording
        self.firstRow = firstRow
    }

    /// Number of recorded backward steps (tests use it to check what is kept).
    public var tapeLength: Int { backwards.count }

    /// True when an op with these inputs must record a backward step.
    @inline(__always) func needsGrad(_ inputs: Variable?...) -> Bool {
        isRecording && inputs.contains { $0?.requiresGrad == true }
    }

    /// Wraps an op result: it requires grad (and `backward` is recorded) iff any input does.
    /// The step runs only if the output received a gradient; afterwards that gradient is dropped,
    /// since every consumer of the output has already run.
    func output(_ value: Tensor, _ inputs: [Variable?], backward: @escaping (Variable) -> Void) -> Variable {
        let needs = isRecording && inputs.contains { $0?.requiresGrad == true }
        let out = Variable(value, requiresGrad: needs)
        if needs {
            let phase = Profile.current?.backward   // the backward step is timed as its op's (`Profile`)
            backwards.append {
                if out.grad != nil { Profile.time(phase) { backward(out) } }
                out.grad = nil
            }
        }
        return out
    }

    /// Back-propagates from a scalar (or any tensor given `seed`), accumulating into `.grad` of
    /// every variable that requires it. The tape is consumed.
    /// `afterStep(i)` runs after the i-th backward step (0: the last op recorded); memory probes use it.
    public func backward(_ root: Variable, seed: Tensor? = nil, afterStep: (Int) -> Void = { _ in }) {
        precondition(isRecording, "backward on a graph that did not record")
        guard root.requiresGrad else { return }
        let g = root.gradBuffer()
        if let seed {
            precondition(seed.shape == root.shape, "backward seed shape \(seed.shape) != \(root.shape)")
            for i in 0..<g.count { g.data[i] += seed.data[i] }
        } else {
            precondition(root.value.count == 1, "backward without a seed needs a scalar, got \(root.shape)")
            g.data[0] += 1
        }
        var i = 0
        while let step = backwards.popLast() {
            step()
            afterStep(i)
            i += 1
        }
    }

    /// Per-layer activation checkpointing: runs `body` without recording and keeps only its inputs;
    /// during backward it runs `body` again on a recording sub-graph and back-propagates through it.
    /// Parameters captured by `body` receive their gradients then. `body` must be deterministic.
    ///
    /// A `rowwiseTail` (a function whose output row i depends on its input row i alone, as Llama's MLP block) is
    /// applied to body's result and replayed `tailRows` rows at a time: its wide intermediates exist for one slice
    /// of rows, in the forward pass and while its gradients are formed (docs/ARCHITECTURE.md, "One training step").
    public func checkpoint(_ inputs: [Variable], _ body: @escaping (Graph, [Variable]) -> Variable,
                           rowwiseTail tail: ((Graph, Variable) -> Variable)? = nil, tailRows: Int = 1024) -> Variable {
        func whole(_ g: Graph, _ xs: [Variable]) -> Variable {
            let mid = body(g, xs)
            return tail.map { g.rowwise(mid, rows: tailRows, $0) } ?? mid
        }
        guard isRecording else { return whole(self, inputs) }
        let outValue = whole(Graph(recording: false, firstRow: firstRow), inputs).value
        // The output always requires grad: parameters inside `body` may, even if no input does.
        let marker = Variable(Tensor(zeros: [1]), requiresGrad: true)
        let firstRow = self.firstRow
        return output(outValue, [marker] + inputs) { out in
            let sub = Graph(recording: true, firstRow: firstRow)
            let leaves = inputs.map { Variable($0.value, requiresGrad: $0.requiresGrad, name: $0.name) }
            let mid = body(sub, leaves)
            if let tail {
                let midGrad = Graph.rowwiseBackward(tail, input: mid, seed: out.grad!, rows: tailRows,
                                                    firstRow: firstRow)
                Graph.afterRowwiseTail?()
                if let midGrad { sub.backward(mid, seed: midGrad) }
            } else {
                sub.backward(mid, seed: out.grad!)
            }
            for (leaf, orig) in zip(leaves, inputs) where orig.requiresGrad {
                if let lg = leaf.grad { orig.accumulate(lg) }
            }
        }
    }

    /// f(x) for a row-wise f (output row i depends on input row i alone). Without recording it runs `rows` rows
    /// at a time, so f's intermediates exist for one slice; while recording it is f on the whole (a checkpoint's
    /// tail is the way to record it in slices).
    public func rowwise(_ x: Variable, rows: Int, _ f: (Graph, Variable) -> Variable) -> Variable {
        let t = x.shape[0]
        guard !isRecording, t > rows else { return f(self, x) }
        var y: Tensor?
        DequantizedWeights.reused {
            for r in Graph.slices(t, rows: rows) {
                let part = f(Graph(recording: false, firstRow: firstRow + r.lowerBound),
                             Variable(x.value.rows(r))).value
                if y == nil { y = Tensor(uninitialized: [t] + part.shape.dropFirst()) }
                y!.setRows(from: r.lowerBound, part)
            }
        }
        return Variable(y!)
    }

    /// Gradients of f's input for output gradient `seed`, f replayed and back-propagated `rows` rows at a time;
    /// parameters inside f accumulate theirs. Returns nil when the input needs none.
    static func rowwiseBackward(_ f: (Graph, Variable) -> Variable, input x: Variable, seed: Tensor, rows: Int,
                                firstRow: Int) -> Tensor? {
        let t = x.shape[0]
        let dx = x.requiresGrad ? Tensor(zeros: x.shape) : nil
        DequantizedWeights.reused {
            for r in Graph.slices(t, rows: rows) {
                let g = Graph(recording: true, firstRow: firstRow + r.lowerBound)
                let slice = Variable(x.value.rows(r), requiresGrad: x.requiresGrad)
                g.backward(f(g, slice), seed: seed.rows(r))
                if let dx, let part = slice.grad { dx.setRows(from: r.lowerBound, part) }
            }
        }
        return dx
    }

    /// 0..<t in consecutive ranges of `rows` (the last may be shorter).
    static func slices(_ t: Int, rows: Int) -> [Range<Int>] {
        stride(from: 0, to: t, by: rows).map { $0..<min(t, $0 + rows) }
    }
}

extension Variable {
    /// grad += t
    public func accumulate(_ t: Tensor) {
        if grad == nil { grad = t.copy(); return }
        let g = grad!
        precondition(g.count == t.count)
        for i in 0..<g.count { g.data[i] += t.data[i] }
    }
}
