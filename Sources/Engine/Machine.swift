import Foundation

/// A one-line description of this machine (CPU model, cores, memory, kernel), for run records.
public enum Machine {
    public static var summary: String {
        let cpu = field("/proc/cpuinfo", "model name") ?? "unknown CPU"
        let memKiB = field("/proc/meminfo", "MemTotal").flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ProcessInfo.processInfo.operatingSystemVersionString
        let gib = Double(memKiB) / 1_048_576
        let cores = ProcessInfo.processInfo.activeProcessorCount
        return "\(cpu), \(cores) cores, \(String(format: "%.1f", gib)) GiB, Linux \(kernel)"
    }

    /// The value of the first `key: value` line of a /proc file.
    static func field(_ path: String, _ key: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return nil
    }

    /// The most this process may grow to: its resident size plus what the cgroup's limit leaves (when a
    /// limit is set) or MemAvailable, whichever is less; and where the figure comes from.
    public static func availableMemory() -> (bytes: Int, source: String) {
        let availableKiB = field("/proc/meminfo", "MemAvailable").flatMap { Int($0.split(separator: " ").first ?? "") }
        let meminfo = (availableKiB ?? 0) * 1024
        for (limitFile, usageFile) in [("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                        "/sys/fs/cgroup/memory/memory.usage_in_bytes")] {
            guard let limit = number(limitFile), limit < 1 << 50 else { continue }
            let left = limit - (number(usageFile) ?? 0) + residentBytes()
            if left < meminfo + residentBytes() || meminfo == 0 { return (left, "cgroup limit \(limitFile)") }
        }
        return (meminfo + residentBytes(), "MemAvailable in /proc/meminfo")
    }

    /// This process's resident set size now (VmRSS).
    public static func residentBytes() -> Int {
        (field("/proc/self/status", "VmRSS").flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0) * 1024
    }

    static func number(_ path: String) -> Int? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}

/// What LongTune uses on this machine (`longtune bench machine`, and the head of every `bench`): the CPU, the
/// instruction set and kernel tiles in use, the threads and what decided them, the BLAS and bf16 GEMM paths, memory.
public struct MachineReport: Codable, Sendable {
    public let cpu: String
    public let isa: String
    public let isaForced: Bool
    public let avx512Bf16: Bool
    public let attentionTiles: String
    public let threads: Int
    public let threadsSource: String
    public let blasCore: String
    public let blasCoreReplaced: String?
    public let bf16Gemm: String
    public let availableMemoryGib: Double

    public static func current() -> MachineReport {
        MachineReport(cpu: Machine.field("/proc/cpuinfo", "model name") ?? "unknown CPU", isa: CPU.isa.rawValue,
                      isaForced: CPU.forcedISA() != nil, avx512Bf16: CPU.hasAVX512BF16, attentionTiles: Micro.tileName,
                      threads: Parallel.threads, threadsSource: CPU.threads.source, blasCore: Parallel.blasCore,
                      blasCoreReplaced: BLASKernel.replacedCoreType, bf16Gemm: BF16GEMM.implementation,
                      availableMemoryGib: Double(Machine.availableMemory().bytes) / 1_073_741_824)
    }

    /// Two lines for a person.
    public var text: String {
        "\(cpu): \(CPU.summary)\n"
            + "attention tiles \(attentionTiles), OpenBLAS core \(blasCore)"
            + (blasCoreReplaced.map { " (in place of \($0))" } ?? "")
            + ", bf16 GEMM \(bf16Gemm), \(String(format: "%.1f", availableMemoryGib)) GiB available"
    }

    /// Snake-case JSON, sorted keys.
    public var json: String { String(decoding: (try? Self.encoder.encode(self)) ?? Data(), as: UTF8.self) }

    /// The JSON object, for commands that nest it in their own (`bench … --json`: "machine").
    public var jsonObject: Any { (try? JSONSerialization.jsonObject(with: Self.encoder.encode(self))) ?? [:] }

    /// Snake-case keys, sorted: the encoder of every `bench … --json` output.
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
