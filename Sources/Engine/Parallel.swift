import CBLAS
import Dispatch
import Foundation

/// Threading for the engine's own kernels. BLAS runs its own threads for large matrices; our
/// kernels that call BLAS on small blocks from several threads switch BLAS to one thread first.
public enum Parallel {
    /// Worker count: all cores, shared evenly by the ranks mpirun started on this machine
    /// (OMPI_COMM_WORLD_LOCAL_SIZE, docs/CONVENTIONS.md §16).
    public static let threads = max(1, ProcessInfo.processInfo.activeProcessorCount / localRanks())

    /// Ranks mpirun started on this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), 1 otherwise.
    public static func localRanks(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        max(1, env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? 1)
    }

    /// Runs `body(i)` for i in 0..<n on all cores; iterations are handed out dynamically.
    @inline(__always)
    public static func forEach(_ n: Int, _ body: (Int) -> Void) {
        if n <= 1 || threads == 1 {
            for i in 0..<n { body(i) }
        } else {
            DispatchQueue.concurrentPerform(iterations: n, execute: body)
        }
    }

    /// Splits 0..<n into contiguous chunks (at least `minChunk` long) and runs them in parallel.
    @inline(__always)
    public static func chunks(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        let pieces = min(threads * 4, max(1, n / max(minChunk, 1)))
        if pieces <= 1 { body(0..<n); return }
        forEach(pieces) { p in
            let lo = n * p / pieces, hi = n * (p + 1) / pieces
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Runs `body` with BLAS limited to one thread (for BLAS calls inside our parallel loops).
    public static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threads)) }
        return try body()
    }

    /// The OpenBLAS kernel family in use (e.g. "Haswell", "SkylakeX").
    public static var blasCore: String { String(cString: openblas_get_corename()) }
}
