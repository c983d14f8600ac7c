import CBLAS
import Foundation

/// OpenBLAS reads its settings from the environment when the library loads, so the command-line
/// tool sets them and re-executes itself once, before any work:
/// - OPENBLAS_CORETYPE: environments that pin an older kernel family (e.g. Haswell) on an AVX-512
///   CPU leave much of sgemm's speed unused; the tool asks for the AVX-512 family the CPU runs.
/// - OPENBLAS_THREAD_TIMEOUT: idle OpenBLAS threads spin (sched_yield) for 2^28 cycles by default,
///   stealing a core from the engine's own kernels between BLAS calls; 2^18 (~0.1 ms) lets them
///   sleep (+20% training throughput on 2 cores).
/// - GOMP_SPINCOUNT: oneDNN (the bf16 GEMM) runs on OpenMP, whose idle threads spin 300,000 times by default
///   before sleeping, stealing a core in the same way; 10,000 (+17% on a bf16 training step: 8.80 s → 7.34 s)
///   keeps the wake-up fast without that.
/// - OPENBLAS_NUM_THREADS, OMP_NUM_THREADS: the engine's thread count (`CPU.threads`: affinity mask, cgroup quota,
///   MPI ranks on the machine, LONGTUNE_THREADS), so that no library starts a thread per online CPU.
/// Under `LONGTUNE_ISA=avx2` the family is Haswell's, as on an AVX2 machine.
/// Values the user set are kept; LONGTUNE_KEEP_OPENBLAS_ENV=1 changes nothing.
public enum BLASKernel {
    static let avx512Families: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]
    /// Families whose sgemm uses AVX2 + FMA (Zen's are AMD's AVX2 kernels).
    static let avx2Families: Set<String> = ["haswell", "zen"]
    static let threadTimeout = "18"
    static let openMPSpinCount = "10000"

    /// The AVX-512 family this CPU runs ("COOPERLAKE" with AVX512-BF16, else "SKYLAKEX"), or nil.
    public static func bestFamily(cpuFlags: Set<String>) -> String? {
        guard ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(cpuFlags.contains) else {
            return nil
        }
        return cpuFlags.contains("avx512_bf16") ? "COOPERLAKE" : "SKYLAKEX"
    }

    /// The kernel family the environment asked for before `configureEnvironment` replaced it.
    public static var replacedCoreType: String? {
        ProcessInfo.processInfo.environment["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"]
    }

    /// The environment changes wanted, given the current environment, the loaded family and the CPU.
    public static func wantedChanges(environment env: [String: String], loadedFamily: String,
                                     cpuFlags: Set<String>, threads: Int = CPU.threads.count) -> [String: String] {
        guard env["LONGTUNE_KEEP_OPENBLAS_ENV"] != "1", env["LONGTUNE_OPENBLAS_CONFIGURED"] == nil else { return [:] }
        var changes: [String: String] = [:]
        if env["OPENBLAS_THREAD_TIMEOUT"] == nil { changes["OPENBLAS_THREAD_TIMEOUT"] = threadTimeout }
        if env["GOMP_SPINCOUNT"] == nil, env["OMP_WAIT_POLICY"] == nil { changes["GOMP_SPINCOUNT"] = openMPSpinCount }
        // OpenBLAS and oneDNN's OpenMP run the engine's count (ranks sharing a machine: this rank's share).
        if env["OPENBLAS_NUM_THREADS"] == nil { changes["OPENBLAS_NUM_THREADS"] = String(threads) }
        if env["OMP_NUM_THREADS"] == nil { changes["OMP_NUM_THREADS"] = String(threads) }
        let wanted = bestFamily(cpuFlags: cpuFlags), loaded = loadedFamily.lowercased()
        if let family = wanted, !avx512Families.contains(loaded) {
            changes["OPENBLAS_CORETYPE"] = family
        } else if wanted == nil, avx512Families.contains(loaded) {
            changes["OPENBLAS_CORETYPE"] = "HASWELL"   // AVX-512 flags removed (LONGTUNE_ISA=avx2)
        } else if wanted == nil, ["avx2", "fma"].allSatisfy(cpuFlags.contains), !avx2Families.contains(loaded) {
            // A CPU newer than the library knows (OpenBLAS 0.3.21 loads Prescott's SSE3 kernels on Emerald Rapids),
            // under LONGTUNE_ISA=avx2: Haswell's kernels, as on an AVX2 machine.
            changes["OPENBLAS_CORETYPE"] = "HASWELL"
        }
        if changes["OPENBLAS_CORETYPE"] != nil {
            changes["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"] = env["OPENBLAS_CORETYPE"] ?? loadedFamily
        }
        return changes
    }

    /// Re-executes the current program with the wanted OpenBLAS settings; returns (doing nothing)
    /// when there is nothing to change or the exec fails.
    public static func configureEnvironment() {
        let changes = wantedChanges(environment: ProcessInfo.processInfo.environment, loadedFamily: Parallel.blasCore,
                                    cpuFlags: CPU.flags)
        guard !changes.isEmpty else { return }
        for (k, v) in changes { setenv(k, v, 1) }
        setenv("LONGTUNE_OPENBLAS_CONFIGURED", "1", 1)
        var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        for k in changes.keys { unsetenv(k) }   // exec failed: carry on with what is loaded
    }
}
