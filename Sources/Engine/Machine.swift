import Foundation

/// A one-line description of this machine (CPU model, cores, memory, kernel), for run records.
public enum Machine {
    public static var summary: String {
        let cpu = field("/proc/cpuinfo", "model name") ?? "unknown CPU"
        let memKiB = field("/proc/meminfo", "MemTotal").flatMap { Int($0.split(separator: " ").first ?? "") } ?? 0
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ProcessInfo.processInfo.operatingSystemVersionString
        let gib = Double(memKiB) / 1_048_576
        return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, \(String(format: "%.1f", gib)) GiB, Linux \(kernel)"
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
}
