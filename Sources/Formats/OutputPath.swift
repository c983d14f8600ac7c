import Engine
import Foundation

/// The one rule for every path a command writes (docs/CONVENTIONS.md §19), checked before anything is written:
/// - a file output never replaces a directory, and a directory output never replaces a file;
/// - an existing non-empty directory is replaced only with `--force`, and only when it is recognisably LongTune's
///   output of that kind (a model directory, a peft adapter); a run directory is reused only when it is one;
/// - an existing file under a file output is replaced atomically (`AtomicFile`).
/// Errors name the option, the path and the fix.
public enum OutputPath {
    /// What a command writes at a path.
    public enum Kind: Sendable {
        /// One file (JSON results, an HTML report, a packed dataset).
        case file
        /// A directory replaced as a whole: a model directory or a peft adapter.
        case directory(DirectoryKind)
        /// A training run's checkpoints directory: created, or reused when it already is one.
        case runDirectory
    }

    /// Directories that replace earlier ones, each recognised by a file only it holds.
    public enum DirectoryKind: String, Sendable {
        case model = "a model directory (config.json)"
        case peftAdapter = "a peft adapter (adapter_config.json)"

        var marker: String { self == .model ? "config.json" : "adapter_config.json" }
    }

    /// Throws when `kind` may not be written at `path` (given as `option` on the command line or in the recipe).
    public static func check(_ path: String, option: String, kind: Kind, force: Bool = false) throws {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard !path.isEmpty else { throw LongTuneError("\(option): an empty path; give a file or directory name") }
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return }
        switch kind {
        case .file:
            if isDirectory.boolValue {
                throw LongTuneError("\(option) \(path): a directory is there and \(option) writes a file; "
                                    + "choose a file path (nothing was written)")
            }
        case .directory(let dir):
            guard isDirectory.boolValue else {
                throw LongTuneError("\(option) \(path): a file is there and \(option) writes a directory; "
                                    + "choose another path (nothing was written)")
            }
            guard !isEmptyDirectory(url) else { return }
            guard force else {
                throw LongTuneError("\(option) \(path) exists; pass --force to replace it (only \(dir.rawValue) "
                                    + "is replaced; nothing was written)")
            }
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent(dir.marker).path) else {
                throw LongTuneError("\(option) \(path) is not \(dir.rawValue), so even --force does not replace it; "
                                    + "choose another path (nothing was written)")
            }
        case .runDirectory:
            guard isDirectory.boolValue else {
                throw LongTuneError("\(option) \(path): a file is there and \(option) is a run's checkpoints "
                                    + "directory; choose another path")
            }
            guard isEmptyDirectory(url) || isRunDirectory(url) else {
                throw LongTuneError("\(option) \(path) holds files that are not a LongTune run's (no step-* "
                                    + "checkpoints, metrics.jsonl or .lock); choose an empty or new directory")
            }
        }
    }

    static func isEmptyDirectory(_ url: URL) -> Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? ["?"]).isEmpty
    }

    /// A directory that LongTune's trainer wrote: checkpoints, the metrics log, the lock, the latest link.
    static func isRunDirectory(_ url: URL) -> Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.contains { $0.hasPrefix("step-") || $0 == "metrics.jsonl" || $0 == ".lock" || $0 == "latest" }
    }
}
