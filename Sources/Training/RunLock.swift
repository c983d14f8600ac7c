import Engine
import Foundation

/// One run per checkpoint directory: an exclusive flock on `<dir>/.lock`, held from the start of
/// training to its end (the kernel drops it if the process dies), with the holder's PID inside so
/// that a second run can say who holds it.
public final class RunLock {
    let fd: Int32
    public let url: URL

    public init(runDir: URL) throws {
        url = runDir.appendingPathComponent(".lock")
        fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw LongTuneError("\(url.path): cannot create the run lock (\(String(cString: strerror(errno))))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            guard reason == EWOULDBLOCK else {
                close(fd)
                throw LongTuneError("\(url.path): cannot lock the run directory "
                                    + "(\(String(cString: strerror(reason)))); "
                                    + "put checkpoints.dir on a local file system")
            }
            let holder = (try? String(contentsOf: url, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            close(fd)
            let holderPID = holder.flatMap { $0.isEmpty ? nil : $0 } ?? "unknown"
            throw LongTuneError("\(runDir.path): another training run (PID \(holderPID)) "
                                + "is using this checkpoints.dir; wait for it to finish, or set another "
                                + "checkpoints.dir")
        }
        let pid = Data("\(getpid())\n".utf8)
        ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

extension Checkpoint {
    /// Removes what interrupted writes leave behind (`.step-N.tmp-PID`, `.latest.tmp-PID`,
    /// `.metrics.jsonl.tmp-PID`). Call only while holding the run lock.
    static func removeStaleTemporaries(runDir: URL) {
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: runDir.path)) ?? []
        for name in names where name.hasPrefix(".") && name.contains(".tmp-") {
            try? fm.removeItem(at: runDir.appendingPathComponent(name))
        }
    }

    /// The newest complete checkpoint of a run directory (one whose state.json reads), or nil.
    public static func newestComplete(runDir: URL) -> URL? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runDir.path)) ?? []
        for name in names.filter({ $0.hasPrefix("step-") }).sorted().reversed() {
            let dir = runDir.appendingPathComponent(name)
            if (try? read(dir)) != nil { return dir }
        }
        return nil
    }
}
