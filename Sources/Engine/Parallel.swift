import CBLAS
import CKernels
import Dispatch
import Foundation

/// Threading for the engine's own kernels. BLAS runs its own threads for large matrices; our
/// kernels that call BLAS on small blocks from several threads switch BLAS to one thread first.
public enum Parallel {
    /// Worker count (`CPU.threads`: the affinity mask, the cgroup quota, LONGTUNE_THREADS; docs/CONVENTIONS.md §18).
    /// OpenBLAS and OpenMP (oneDNN) are given the same count the first time it is read.
    public static let threads: Int = {
        let n = CPU.threads.count
        openblas_set_num_threads(Int32(n))
        _ = lt_set_openmp_threads(Int32(n))
        return n
    }()

    /// Ranks mpirun started on this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), 1 otherwise.
    public static func localRanks(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        max(1, env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? 1)
    }

    /// Runs `body(i)` for i in 0..<n on `threads` workers; iterations are handed out dynamically (one counter), so no
    /// more than `threads` run at once whatever the dispatch pool's own width.
    @inline(__always)
    public static func forEach(_ n: Int, _ body: (Int) -> Void) {
        if n <= 1 || threads == 1 {
            for i in 0..<n { body(i) }
        } else if n <= threads {
            Profile.parallelLoop(n, threads: threads) { DispatchQueue.concurrentPerform(iterations: n, execute: body) }
        } else {
            let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)
            next.initialize(to: 0)
            defer { next.deallocate() }
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                while true {
                    let i = lt_fetch_increment(next)
                    if i >= n { break }
                    body(i)
                }
            }
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
