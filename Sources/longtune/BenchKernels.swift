import ArgumentParser
import Engine
import Foundation

/// `longtune bench kernels`: sgemm and bf16 GEMM at Llama shapes and fused attention forward+backward.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GFLOP/s of sgemm and bf16 GEMM at Llama shapes and of fused attention at 2048 and 8192 tokens.")

    @Option(help: "Attention lengths to measure.") var lengths: [Int] = [2048, 8192]
    @Option(help: "Query heads, KV heads and head dimension of the attention benchmark.")
    var heads = 9
    @Option var kvHeads = 3
    @Option var headDim = 64
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() throws {
        guard lengths.allSatisfy({ $0 >= 2 }), headDim >= 1, kvHeads >= 1, heads >= kvHeads, heads % kvHeads == 0 else {
            throw EngineError("--lengths must be at least 2, --head-dim positive, and --kv-heads a positive divisor of "
                              + "--heads (got lengths \(lengths), heads \(heads), kv-heads \(kvHeads), "
                              + "head-dim \(headDim))")
        }
        var rows: [[String: Any]] = []
        let reference = BLAS.measureGFlops(m: 2048, n: 2048, k: 2048)
        rows.append(["kernel": "sgemm 2048x2048x2048", "gflops": reference])

        // SmolLM2-135M projections at 2048 tokens (x · Wᵀ), and an LM-head chunk.
        for (name, m, n, k) in [("q_proj/o_proj 2048x576x576", 2048, 576, 576),
                                ("k_proj/v_proj 2048x192x576", 2048, 192, 576),
                                ("gate/up_proj 2048x1536x576", 2048, 1536, 576),
                                ("down_proj 2048x576x1536", 2048, 576, 1536),
                                ("lm_head chunk 256x49152x576", 256, 49152, 576)] {
            let sgemm = BLAS.measureGFlops(m: m, n: n, k: k, transB: true)
            let bf16 = BF16GEMM.measureGFlops(m: m, n: n, k: k)
            rows.append(["kernel": "sgemm " + name, "gflops": sgemm])
            rows.append(["kernel": "bf16  " + name, "gflops": bf16, "times_sgemm": bf16 / sgemm])
        }
        for t in lengths {
            for (label, layout) in [("causal", AttentionLayout.causal(length: t, heads: heads)),
                                    ("s2 1/4",
                                     try AttentionLayout.shiftedShort(length: t, heads: heads, groupSize: t / 4))] {
                for bf16 in FlashAttentionBF16.applies(headDim: headDim) ? [false, true] : [false] {
                    for backward in [false, true] {
                        let r = attention(length: t, layout: layout, backward: backward, bf16: bf16)
                        rows.append(["kernel": "attention\(bf16 ? " bf16" : "") \(backward ? "fwd+bwd" : "fwd    ") "
                                         + "\(label) L=\(t) H=\(heads)/\(kvHeads) d=\(headDim)",
                                     "gflops": r.gflops, "fraction_of_sgemm": r.gflops / reference,
                                     "peak_extra_mib": r.peakMiB, "seconds": r.seconds])
                    }
                }
            }
        }
        if json {
            let data = try JSONSerialization.data(
                withJSONObject: ["machine": MachineReport.current().jsonObject, "results": rows],
                options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(MachineReport.current().text)
            for r in rows {
                var line = (r["kernel"] as! String).padding(toLength: 58, withPad: " ", startingAt: 0)
                line += String(format: "%8.1f GFLOP/s", r["gflops"] as! Double)
                if let x = r["times_sgemm"] as? Double { line += String(format: "  %.2f× sgemm", x) }
                if let f = r["fraction_of_sgemm"] as? Double {
                    line += String(format: "  %5.1f%% of sgemm  %6.3f s  peak +%.1f MiB",
                                   100 * f, r["seconds"] as! Double, r["peak_extra_mib"] as! Double)
                }
                print(line)
            }
            print("Attention FLOPs count only kept (causal, in-segment) scores: 4·d per score forward, "
                  + "10·d backward (recompute included).")
        }
    }

    /// Best-of-several GFLOP/s of C = A · op(B).
    /// Forward only (as in evaluation) or forward + backward (as in training).
    func attention(length t: Int, layout: AttentionLayout, backward: Bool,
                   bf16: Bool) -> (gflops: Double, seconds: Double, peakMiB: Double) {
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
