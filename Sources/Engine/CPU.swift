import CKernels
import Foundation

/// What this process uses of the CPU it runs on (docs/CONVENTIONS.md §18): the instruction set the kernels are
/// chosen for and the number of threads. The one owner of both: the attention micro-kernels, the bf16 GEMM, OpenBLAS's
/// kernel family, the thread pools and `bench` read them here.
public enum CPU {
    /// The vector instruction sets LongTune has kernels for: AVX2 + FMA (16 ymm registers) and AVX-512 (32 zmm).
    public enum ISA: String, Sendable {
        case avx2, avx512
    }

    /// `LONGTUNE_ISA=avx2` runs the AVX2 + FMA paths on any machine (kernel tiles, fp32 attention, the widened bf16
    /// GEMM, OpenBLAS's Haswell kernels): the fallback configuration `.ci/run` tests.
    public static let isaVariable = "LONGTUNE_ISA"
    /// `LONGTUNE_THREADS=N` (or `longtune --threads N`) sets the thread count, whatever the limits say.
    public static let threadsVariable = "LONGTUNE_THREADS"

    /// Feature flags of /proc/cpuinfo's first processor, less every AVX-512 flag when the AVX2 paths are forced or the
    /// build targets a CPU without AVX-512.
    public static let flags: Set<String> = effectiveFlags(detected: detectedFlags(), isa: forcedISA())

    /// The instruction set in use: AVX-512 where the CPU has F, BW, DQ and VL (and the build may use them).
    public static let isa: ISA = isa(of: flags)

    /// Whether the AVX512-BF16 dot-product instructions are in use (bf16 GEMM on oneDNN, bf16 attention).
    public static let hasAVX512BF16 = isa == .avx512 && flags.contains("avx512_bf16")

    public static func isa(of flags: Set<String>) -> ISA {
        ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains) ? .avx512 : .avx2
    }

    public static func effectiveFlags(detected: Set<String>, isa forced: ISA?) -> Set<String> {
        forced == .avx2 ? detected.filter { !$0.hasPrefix("avx512") } : detected
    }

    /// AVX2 when `LONGTUNE_ISA=avx2` says so or the build targets an AVX2-only CPU (Package.swift's
    /// `LONGTUNE_TARGET_CPU`); nil otherwise (use what the CPU has).
    public static func forcedISA(_ env: [String: String] = ProcessInfo.processInfo.environment) -> ISA? {
        #if LONGTUNE_AVX2_BUILD
        return .avx2
        #else
        return env[isaVariable].flatMap { ISA(rawValue: $0.lowercased()) } == .avx2 ? .avx2 : nil
        #endif
    }

    /// CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none).
    public static func detectedFlags() -> Set<String> {
        guard let line = Machine.field("/proc/cpuinfo", "flags") else { return [] }
        return Set(line.split(separator: " ").map(String.init))
    }

    /// The environment's `LONGTUNE_ISA`, checked: nil when unset, an error naming the choices when it is not one.
    public static func checkEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws {
        if let v = env[isaVariable], ISA(rawValue: v.lowercased()) == nil {
            throw LongTuneError("\(isaVariable)=\(v): expected avx2 (run the AVX2 + FMA paths) or avx512; unset it "
                                + "to use what the CPU has")
        }
        _ = try requestedThreads(env)
    }

    // MARK: Threads

    /// How many threads the engine, OpenBLAS and oneDNN run, and what decided it.
    public struct Threads: Sendable, Equatable {
        public let count: Int
        /// "LONGTUNE_THREADS", "affinity mask (2 of 16 CPUs)", "cgroup CPU quota (1.5 CPUs)", "all 16 CPUs", with
        /// ", shared by 2 MPI ranks" where it applies.
        public let source: String

        public init(count: Int, source: String) {
            self.count = count
            self.source = source
        }
    }

    /// This process's thread count (read once).
    public static let threads: Threads = threads(
        requested: (try? requestedThreads()) ?? nil, online: onlineCPUs(), affinity: Int(lt_affinity_cpu_count()),
        quota: cgroupQuota(), localRanks: Parallel.localRanks())

    /// The rule (docs/CONVENTIONS.md §18): a requested count wins; else the CPUs this process may run on (affinity
    /// mask) within the cgroup CPU quota (rounded up); ranks mpirun started on this machine without binding them
    /// (their mask is the whole machine) share that evenly.
    public static func threads(requested: Int?, online: Int, affinity: Int, quota: Double?,
                               localRanks: Int) -> Threads {
        if let requested { return Threads(count: requested, source: threadsVariable) }
        let mask = affinity > 0 ? affinity : online
        var count = max(1, mask)
        var source = mask < online ? "affinity mask (\(mask) of \(online) CPUs)" : "all \(online) CPUs"
        if let quota, Int(quota.rounded(.up)) < count {
            count = max(1, Int(quota.rounded(.up)))
            source = String(format: "cgroup CPU quota (%g CPUs)", quota)
        }
        if localRanks > 1 && mask >= online {
            count = max(1, count / localRanks)
            source += ", shared by \(localRanks) MPI ranks"
        }
        return Threads(count: count, source: source)
    }

    /// `LONGTUNE_THREADS` as a count ≥ 1, nil when unset; an error naming the variable when it is not such a count.
    static func requestedThreads(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> Int? {
        guard let v = env[threadsVariable] else { return nil }
        guard let n = Int(v.trimmingCharacters(in: .whitespaces)), n >= 1, n <= 4096 else {
            throw LongTuneError("\(threadsVariable)=\(v) (or --threads): expected a whole number of threads from 1 "
                                + "to 4096")
        }
        return n
    }

    static func onlineCPUs() -> Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The CPU time per wall second the cgroup allows (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
    /// `cpu.cfs_period_us`), nil when unlimited or unreadable.
    public static func cgroupQuota(root: String = "/sys/fs/cgroup") -> Double? {
        if let text = try? String(contentsOfFile: root + "/cpu.max", encoding: .utf8) {
            return quota(cgroupV2: text)
        }
        for dir in [root + "/cpu", root + "/cpu,cpuacct"] {
            guard let q = Machine.number(dir + "/cpu.cfs_quota_us"), let p = Machine.number(dir + "/cpu.cfs_period_us")
            else { continue }
            return q > 0 && p > 0 ? Double(q) / Double(p) : nil
        }
        return nil
    }

    /// "max 100000" → nil; "150000 100000" → 1.5.
    public static func quota(cgroupV2 text: String) -> Double? {
        let parts = text.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, let q = Double(parts[0]), let p = Double(parts[1]), q > 0, p > 0 else { return nil }
        return q / p
    }

    /// One line for run records and `bench`: "AVX-512 (avx512_bf16), 2 threads (all 2 CPUs)".
    public static var summary: String {
        (isa == .avx512 ? "AVX-512" + (hasAVX512BF16 ? " + AVX512-BF16" : "") : "AVX2 + FMA")
            + (forcedISA() == .avx2 && isa(of: detectedFlags()) == .avx512 ? " (forced; the CPU has AVX-512)" : "")
            + ", \(threads.count) thread\(threads.count == 1 ? "" : "s") (\(threads.source))"
    }
}
