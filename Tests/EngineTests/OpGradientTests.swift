import Engine
import TestSupport
import XCTest

/// Every op's backward against central finite differences (at odd sizes).
final class OpGradientTests: XCTestCase {
    func testAddMulScale() {
        checkGradients([randomTensor([3, 5], seed: 1), randomTensor([3, 5], seed: 2)]) { g, v in
            g.scale(g.mul(g.add(v[0], v[1]), v[0]), 0.7)
        }
    }

    func testSumMean() {
        checkGradients([randomTensor([4, 3], seed: 3)]) { g, v in g.add(g.sum(v[0]), g.mean(v[0])) }
    }

    func testMatmulAllTransposes() {
        for ta in [false, true] { for tb in [false, true] {
            let a = randomTensor(ta ? [5, 3] : [3, 5], seed: 4), b = randomTensor(tb ? [7, 5] : [5, 7], seed: 5)
            checkGradients([a, b]) { g, v in g.matmul(v[0], v[1], transposeA: ta, transposeB: tb) }
        } }
    }

    func testBatchedMatmulAllTransposes() {
        for ta in [false, true] { for tb in [false, true] {
            let a = randomTensor(ta ? [2, 5, 3] : [2, 3, 5], seed: 6), b = randomTensor(tb ? [2, 4, 5] : [2, 5, 4], seed: 7)
            checkGradients([a, b]) { g, v in g.batchedMatmul(v[0], v[1], transposeA: ta, transposeB: tb) }
        } }
    }

    func testLinearWithBias() {
        checkGradients([randomTensor([5, 7], seed: 8), randomTensor([3, 7], seed: 9), randomTensor([3], seed: 10)]) { g, v in
            g.linear(v[0], weight: v[1], bias: v[2])
        }
    }

    func testFrozenWeightGetsNoGradient() {
        // Weight frozen: only x receives a gradient, and the weight's is never allocated.
        checkGradients([randomTensor([5, 7], seed: 11), randomTensor([3, 7], seed: 12)], frozen: [1]) { g, v in
            g.linear(v[0], weight: v[1])
        }
    }

    func testRMSNorm() {
        checkGradients([randomTensor([6, 9], seed: 13), randomTensor([9], seed: 14)]) { g, v in
            g.rmsNorm(v[0], weight: v[1], eps: 1e-5)
        }
    }

    func testSwiGLU() {
        checkGradients([randomTensor([4, 11], seed: 15, scale: 3), randomTensor([4, 11], seed: 16)]) { g, v in
            g.swiglu(gate: v[0], up: v[1])
        }
    }

    /// Gemma's norm: (1 + w) ⊙ x̂, the weight's gradient as for w.
    func testRMSNormWithWeightOffset() {
        checkGradients([randomTensor([5, 8], seed: 21), randomTensor([8], seed: 22)]) { g, v in
            g.rmsNorm(v[0], weight: v[1], eps: 1e-6, weightOffset: 1)
        }
    }

    /// GeGLU over gates from −6 to 6 (both tails of tanh) and a row longer than one 16-lane vector.
    func testGeGLU() {
        checkGradients([randomTensor([3, 21], seed: 23, scale: 6), randomTensor([3, 21], seed: 24)]) { g, v in
            g.geglu(gate: v[0], up: v[1])
        }
    }

    /// gelu_pytorch_tanh's values against its formula in Double.
    func testGeluTanhValues() {
        let x = (-40...40).map { Float($0) / 4 }
        let y = Graph(recording: false).geglu(gate: Variable(Tensor(shape: [1, x.count], x)),
                                               up: Variable(Tensor(shape: [1, x.count], [Float](repeating: 1, count: x.count))))
        for (xi, yi) in zip(x, y.value.array) {
            let d = Double(xi), expected = 0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)))
            XCTAssertEqual(Double(yi), expected, accuracy: 1e-6 * max(1, abs(expected)), "gelu(\(xi))")
        }
    }

    func testEmbeddingScatterAddsRepeatedIds() {
        checkGradients([randomTensor([6, 5], seed: 17)]) { g, v in g.embedding([3, 1, 3, 0, 5, 3], table: v[0]) }
    }

    func testRopeWithAttentionFactorAndPartialRotary() {
        // 2 heads of dim 8, rotary dim 6 (the last 2 dims pass through), attention factor 1.2.
        let tables = RopeTables(positions: [0, 3, 7, 100], invFreq: [1, 0.1, 0.01], attentionFactor: 1.2)
        checkGradients([randomTensor([4, 16], seed: 18)]) { g, v in g.rope(v[0], heads: 2, headDim: 8, tables: tables) }
    }

    func testCrossEntropyIgnoresIndex() {
        checkGradients([randomTensor([5, 7], seed: 19, scale: 2)]) { g, v in
            g.crossEntropy(v[0], targets: [1, -100, 6, 0, 3])
        }
    }

    func testLMHeadCrossEntropy() {
        // Chunk 2 over 5 rows: the last chunk is partial.
        checkGradients([randomTensor([5, 6], seed: 20), randomTensor([9, 6], seed: 21)]) { g, v in
            g.lmHeadCrossEntropy(v[0], weight: .dense(v[1]), targets: [8, 0, -100, 4, 2], chunk: 2)
        }
    }

    func testAttentionWithSegmentsAndGQA() throws {
        // 6 tokens, 4 query heads over 2 KV heads, head dim 3; two groups of heads with different segments.
        let layout = try AttentionLayout(length: 6, heads: 4, groups: [
            .init(heads: 0..<2, segments: [0..<6]),
            .init(heads: 2..<4, segments: [0..<2, 2..<5, 5..<6]),
        ])
        checkGradients([randomTensor([6, 12], seed: 22), randomTensor([6, 6], seed: 23), randomTensor([6, 6], seed: 24)]) { g, v in
            g.attention(q: v[0], k: v[1], v: v[2], heads: 4, kvHeads: 2, headDim: 3, layout: layout)
        }
    }

    func testCheckpointedBlockMatchesPlainBlock() {
        // A residual MLP block with a trainable weight captured by the closure.
        let x = randomTensor([5, 4], seed: 25), w = randomTensor([4, 4], seed: 26)
        enum Mode { case plain, checkpointed, slicedTail }
        func run(_ mode: Mode) -> (Tensor, Tensor, Int) {
            let g = Graph()
            let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true)
            let block: (Graph, [Variable]) -> Variable = { g, h in
                g.add(h[0], g.swiglu(gate: g.linear(h[0], weight: wv), up: h[0]))
            }
            var h = xv
            for _ in 0..<3 {
                switch mode {
                case .plain: h = block(g, [h])
                case .checkpointed: h = g.checkpoint([h], block)
                case .slicedTail:   // a row-wise tail replayed 2 rows at a time (5 rows: slices 2, 2, 1)
                    h = g.checkpoint([h], { g, h in g.mul(h[0], h[0]) }, rowwiseTail: { g, h in block(g, [h]) }, tailRows: 2)
                }
            }
            let loss = g.sum(g.mul(h, h))
            let tape = g.tapeLength
            g.backward(loss)
            return (xv.grad!, wv.grad!, tape)
        }
        let plain = run(.plain), ckpt = run(.checkpointed)
        assertClose(ckpt.0.array, plain.0.array, atol: 1e-5, rtol: 1e-5, "dx")
        assertClose(ckpt.1.array, plain.1.array, atol: 1e-5, rtol: 1e-5, "dw")
        XCTAssertLessThan(ckpt.2, plain.2, "checkpointing should keep one step per block")

        // The same blocks after a squaring body, with the tail in slices, against the plain graph of both.
        func plainSquared() -> (Tensor, Tensor) {
            let g = Graph()
            let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true)
            var h = xv
            for _ in 0..<3 { let s = g.mul(h, h); h = g.add(s, g.swiglu(gate: g.linear(s, weight: wv), up: s)) }
            g.backward(g.sum(g.mul(h, h)))
            return (xv.grad!, wv.grad!)
        }
        let sliced = run(.slicedTail), reference = plainSquared()
        assertClose(sliced.0.array, reference.0.array, atol: 1e-5, rtol: 1e-5, "dx, sliced tail")
        assertClose(sliced.1.array, reference.1.array, atol: 1e-5, rtol: 1e-5, "dw, sliced tail")
    }

    func testRowwiseWithoutRecordingEqualsTheWhole() {
        let x = Variable(randomTensor([7, 4], seed: 29)), w = Variable(randomTensor([6, 4], seed: 30))
        let f: (Graph, Variable) -> Variable = { g, h in g.swiglu(gate: g.linear(h, weight: w), up: g.linear(h, weight: w)) }
        let whole = f(Graph(recording: false), x).value
        let sliced = Graph(recording: false).rowwise(x, rows: 3, f).value
        XCTAssertEqual(sliced.shape, [7, 6])
        // Equal up to the summation order of sgemm's kernels for 3 and 1 rows against 7.
        assertClose(sliced.array, whole.array, atol: 1e-6, rtol: 1e-6, "rowwise")
    }

    func testNoGradGraphRecordsNothing() {
        let g = Graph(recording: false)
        let w = Variable(randomTensor([3, 3], seed: 27), requiresGrad: true)
        let y = g.linear(Variable(randomTensor([2, 3], seed: 28)), weight: w)
        XCTAssertFalse(y.requiresGrad)
        XCTAssertEqual(g.tapeLength, 0)
    }
}
