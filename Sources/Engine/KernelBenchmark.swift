import Foundation

/// `bench kernels`: GFLOP/s of sgemm and the bf16 GEMM at SmolLM2-135M's projection shapes and an LM-head chunk, and
/// of the fused attention (causal and S2, fp32 and bf16, forward and forward + backward) at the given lengths.
public enum KernelBenchmark {
    /// The attention benchmark's heads.
    public struct Shape: Sendable {
        public var heads = 9, kvHeads = 3, headDim = 64
        public init(heads: Int, kvHeads: Int, headDim: Int) {
            self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim
        }
    }

    /// One measured kernel; its JSON keys are `bench kernels --json`'s.
    public struct Row: Encodable, Sendable {
        public let kernel: String
        public let gflops: Double
        /// bf16 GEMM rows: its speed-up over sgemm at the same shape.
        public var timesSgemm: Double? = nil
        /// Attention rows: against the 2048³ sgemm, the seconds and the extra memory.
        public var fractionOfSgemm: Double? = nil, seconds: Double? = nil, peakExtraMiB: Double? = nil

        enum CodingKeys: String, CodingKey {
            case kernel, gflops, seconds, timesSgemm = "times_sgemm", fractionOfSgemm = "fraction_of_sgemm"
            case peakExtraMiB = "peak_extra_mib"
        }

        /// The row as the table prints it.
        public var line: String {
            var line = kernel.padding(toLength: 58, withPad: " ", startingAt: 0)
                + String(format: "%8.1f GFLOP/s", gflops)
            if let timesSgemm { line += String(format: "  %.2f× sgemm", timesSgemm) }
            if let fractionOfSgemm, let seconds, let peakExtraMiB {
                line += String(format: "  %5.1f%% of sgemm  %6.3f s  peak +%.1f MiB", 100 * fractionOfSgemm, seconds,
                               peakExtraMiB)
            }
            return line
        }
    }

    /// `bench kernels --json`: the machine and the rows.
    public struct Report: Encodable {
        public let machine: MachineReport
        public let results: [Row]
        public init(machine: MachineReport, results: [Row]) { self.machine = machine; self.results = results }
    }

    public static let attentionNote = "Attention FLOPs count only kept (causal, in-segment) scores: 4·d per score "
        + "forward, 10·d backward (recompute included)."

    public static func run(lengths: [Int], shape s: Shape) throws -> [Row] {
        guard lengths.allSatisfy({ $0 >= 2 }), s.headDim >= 1, s.kvHeads >= 1, s.heads >= s.kvHeads,
              s.heads % s.kvHeads == 0 else {
            throw LongTuneError("--lengths must be at least 2, --head-dim positive, and --kv-heads a positive divisor "
                                + "of --heads (got lengths \(lengths), heads \(s.heads), kv-heads \(s.kvHeads), "
                                + "head-dim \(s.headDim))")
        }
        let reference = BLAS.measureGFlops(m: 2048, n: 2048, k: 2048)
        return [Row(kernel: "sgemm 2048x2048x2048", gflops: reference)] + gemmRows()
            + (try attentionRows(lengths: lengths, shape: s, reference: reference))
    }

    /// SmolLM2-135M projections at 2048 tokens (x · Wᵀ), and an LM-head chunk: sgemm and bf16.
    static func gemmRows() -> [Row] {
        [("q_proj/o_proj 2048x576x576", 2048, 576, 576), ("k_proj/v_proj 2048x192x576", 2048, 192, 576),
         ("gate/up_proj 2048x1536x576", 2048, 1536, 576), ("down_proj 2048x576x1536", 2048, 576, 1536),
         ("lm_head chunk 256x49152x576", 256, 49152, 576)].flatMap { name, m, n, k in
            let sgemm = BLAS.measureGFlops(m: m, n: n, k: k, transB: true)
            let bf16 = BF16GEMM.measureGFlops(m: m, n: n, k: k)
            return [Row(kernel: "sgemm " + name, gflops: sgemm),
                    Row(kernel: "bf16  " + name, gflops: bf16, timesSgemm: bf16 / sgemm)]
        }
    }

    static func attentionRows(lengths: [Int], shape s: Shape, reference: Double) throws -> [Row] {
        var rows: [Row] = []
        for t in lengths {
            for (label, layout) in [("causal", AttentionLayout.causal(length: t, heads: s.heads)),
                                    ("s2 1/4",
                                     try AttentionLayout.shiftedShort(length: t, heads: s.heads, groupSize: t / 4))] {
                for bf16 in FlashAttentionBF16.applies(headDim: s.headDim) ? [false, true] : [false] {
                    for backward in [false, true] {
                        let r = attention(length: t, layout: layout, shape: s, backward: backward, bf16: bf16)
                        let kernel = "attention\(bf16 ? " bf16" : "") \(backward ? "fwd+bwd" : "fwd    ") "
                            + "\(label) L=\(t) H=\(s.heads)/\(s.kvHeads) d=\(s.headDim)"
                        rows.append(Row(kernel: kernel, gflops: r.gflops, fractionOfSgemm: r.gflops / reference,
                                        seconds: r.seconds, peakExtraMiB: r.peakMiB))
                    }
                }
            }
        }
        return rows
    }

    /// Best of three GFLOP/s of the fused attention over `layout`, forward only (as in evaluation) or forward +
    /// backward (as in training), with the seconds and the memory it allocated beyond its inputs.
    static func attention(length t: Int, layout: AttentionLayout, shape s: Shape, backward: Bool,
                          bf16: Bool) -> (gflops: Double, seconds: Double, peakMiB: Double) {
        let (heads, kvHeads, headDim) = (s.heads, s.kvHeads, s.headDim)
        var rng = SplitMix64(seed: 1)
        let q = Tensor(shape: [t, heads * headDim], uniform: -1, 1, rng: &rng)
        let k = Tensor(shape: [t, kvHeads * headDim], uniform: -1, 1, rng: &rng)
        let v = Tensor(shape: [t, kvHeads * headDim], uniform: -1, 1, rng: &rng)
        let dout = Tensor(shape: [t, heads * headDim], uniform: -1, 1, rng: &rng)
        let flops = layout.keptScores * Double(headDim) * (backward ? 14 : 4)
        var best = Double.infinity, peak = 0
        for _ in 0..<3 {
            let qv = Variable(q, requiresGrad: true), kv = Variable(k, requiresGrad: true),
                vv = Variable(v, requiresGrad: true)
            MemoryStats.resetPeak()
            let base = MemoryStats.liveBytes
            let t0 = DispatchTime.now().uptimeNanoseconds
            let g = Graph(recording: backward)
            let y = g.attention(q: qv, k: kv, v: vv, heads: heads, kvHeads: kvHeads, headDim: headDim, layout: layout,
                                bf16: bf16)
            if backward { g.backward(y, seed: dout) }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
            peak = max(peak, MemoryStats.peak - base)
        }
        return (flops / best / 1e9, best, Double(peak) / 1048576)
    }
}
