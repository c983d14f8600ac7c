import CBLAS
import Foundation

/// OpenBLAS picks its kernel family when the library loads, from the CPU or from
/// OPENBLAS_CORETYPE. Environments that pin an older family (e.g. Haswell) on an AVX-512 CPU
/// leave half of sgemm's speed unused, so the command-line tool re-executes itself once with the
/// AVX-512 family the CPU supports. LONGTUNE_KEEP_OPENBLAS_CORETYPE=1 keeps the given choice.
public enum BLASKernel {
    static let avx512Families: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]

    /// The AVX-512 family this CPU runs ("COOPERLAKE" with AVX512-BF16, else "SKYLAKEX"), or nil.
    public static func bestFamily(cpuFlags: Set<String>) -> String? {
        guard ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(cpuFlags.contains) else { return nil }
        return cpuFlags.contains("avx512_bf16") ? "COOPERLAKE" : "SKYLAKEX"
    }

    /// CPU feature flags of the first processor in /proc/cpuinfo (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// The family the environment forced before `preferAVX512` replaced it, if it did.
    public static var replacedCoreType: String? { ProcessInfo.processInfo.environment["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"] }

    /// Re-executes the current program with OPENBLAS_CORETYPE set to the CPU's AVX-512 family
    /// when OpenBLAS loaded a narrower one. Returns (doing nothing) when no change is possible.
    public static func preferAVX512() {
        let env = ProcessInfo.processInfo.environment
        guard env["LONGTUNE_KEEP_OPENBLAS_CORETYPE"] != "1", env["LONGTUNE_REPLACED_OPENBLAS_CORETYPE"] == nil,
              !avx512Families.contains(Parallel.blasCore.lowercased()),
              let family = bestFamily(cpuFlags: cpuFlags()) else { return }
        setenv("LONGTUNE_REPLACED_OPENBLAS_CORETYPE", env["OPENBLAS_CORETYPE"] ?? Parallel.blasCore, 1)
        setenv("OPENBLAS_CORETYPE", family, 1)
        let args = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        // exec failed: carry on with the kernel already loaded.
        unsetenv("LONGTUNE_REPLACED_OPENBLAS_CORETYPE")
    }
}
