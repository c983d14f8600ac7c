import Engine
import Formats
import Llama
import Foundation

/// What a checkpoint records besides tensors: enough to continue exactly and to refuse a
/// mismatched resume.
public struct TrainerState: Codable, Equatable {
    public var step: Int
    public var cursor: Int
    public var recipe: Recipe
    public var modelConfig: String          // the model's LlamaConfig.fingerprint
    public var trainable: [String]
    public var metrics: [MetricRecord]
    public var versions: [String: String]
}

extension TrainerState {
    /// state.json, with the recipe read as recipe files are (defaults of keys added since it was written).
    static func decode(_ data: Data, source: String) throws -> TrainerState {
        guard var tree = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw LongTuneError("\(source): not a JSON object (a damaged checkpoint?)")
        }
        let recipe = try Recipe.decode(tree["recipe"] as? [String: Any] ?? [:], source: source + ", recipe")
        tree["recipe"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(recipe))
        do {
            return try JSONDecoder().decode(TrainerState.self, from: JSONSerialization.data(withJSONObject: tree))
        } catch let e as DecodingError {
            throw LongTuneError("\(source): \(describe(e))")
        }
    }

    /// The state of a run's newest checkpoint (`latest/state.json`), or nil before the first one (or if it does not
    /// read): what `report` shows of a run.
    public static func latest(in runDir: URL) -> TrainerState? {
        let url = runDir.appendingPathComponent("latest/state.json")
        return FileManager.default.contents(atPath: url.path).flatMap { try? decode($0, source: url.path) }
    }
}

/// `checkpoints/<run>/step-000200/` with adapter.safetensors (trainable tensors, HF names),
/// optimizer.safetensors (`m.<name>`, `v.<name>`) and state.json; written into a temporary
/// directory, fsynced, then renamed; `latest` is a symlink swapped atomically to the newest
/// (docs/CONVENTIONS.md §6).
public enum Checkpoint {
    public static func name(step: Int) -> String { String(format: "step-%06d", step) }

    /// Creates the run directory, or explains why it cannot be used.
    public static func prepare(runDir: URL) throws {
        try OutputPath.check(runDir.path, option: "checkpoints.dir", kind: .runDirectory)
        let fm = FileManager.default
        do { try fm.createDirectory(at: runDir, withIntermediateDirectories: true) } catch {
            let reason = (error as NSError).localizedFailureReason
                ?? "a path component is not a directory or not writable"
            throw LongTuneError(
                "\(runDir.path): cannot create the checkpoint directory ("
                + "\(reason)"
                + "); set checkpoints.dir to a writable place")
        }
        guard fm.isWritableFile(atPath: runDir.path) else {
            throw LongTuneError(
                "\(runDir.path): checkpoint directory is not writable; set checkpoints.dir to a writable place")
        }
    }

    /// Writes step `state.step`'s checkpoint and points `latest` at it. `afterFirstFile` runs once
    /// the first file is written (tests kill the process there to check that an interrupted write
    /// leaves the previous checkpoint intact).
    public static func write(runDir: URL, state: TrainerState, tensors: [(String, Tensor)],
                             m: [String: Tensor], v: [String: Tensor], keep: Int,
                             afterFirstFile: () -> Void = {}) throws -> URL {
        let fm = FileManager.default
        try prepare(runDir: runDir)
        let final = runDir.appendingPathComponent(name(step: state.step))
        let tmp = runDir.appendingPathComponent(".\(name(step: state.step)).tmp-\(getpid())")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
        do {
            try SafetensorsFile.write(tensors, dtype: .fp32, to: tmp.appendingPathComponent("adapter.safetensors"))
            afterFirstFile()
            let moments = tensors.flatMap { (n, _) in [("m." + n, m[n]!), ("v." + n, v[n]!)] }
            try SafetensorsFile.write(moments, dtype: .fp32, to: tmp.appendingPathComponent("optimizer.safetensors"))
            try AtomicFile.writeJSON(state, to: tmp.appendingPathComponent("state.json"))
            fsyncPath(tmp)
            if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
            guard rename(tmp.path, final.path) == 0 else {
                throw LongTuneError("rename \(tmp.path): \(String(cString: strerror(errno)))")
            }
            // latest -> step-XXXXXX, swapped with a rename so it is never missing or half-written.
            let link = runDir.appendingPathComponent(".latest.tmp-\(getpid())")
            try? fm.removeItem(at: link)
            try fm.createSymbolicLink(atPath: link.path, withDestinationPath: final.lastPathComponent)
            guard rename(link.path, runDir.appendingPathComponent("latest").path) == 0 else {
                throw LongTuneError("updating \(runDir.path)/latest: \(String(cString: strerror(errno)))")
            }
            fsyncPath(runDir)
        } catch {
            try? fm.removeItem(at: tmp)
            throw LongTuneError("\(runDir.path): writing checkpoint \(final.lastPathComponent) failed (\(error)); "
                                + "the previous checkpoint is intact")
        }
        // Keep the newest `keep` complete checkpoints.
        let all = (try? fm.contentsOfDirectory(atPath: runDir.path))?.filter { $0.hasPrefix("step-") }.sorted() ?? []
        for old in all.dropLast(keep) { try? fm.removeItem(at: runDir.appendingPathComponent(old)) }
        return final
    }

    public struct Loaded {
        public let url: URL
        public let state: TrainerState
        public let tensors: SafetensorsFile
        public let optimizer: SafetensorsFile

        /// Throws when a trained tensor holds NaN or infinity (a diverged run): merging or evaluating
        /// it would give a broken model without a word.
        public func requireFiniteTensors() throws {
            for name in tensors.names {
                let t = try tensors.tensor(name)
                if let i = (0..<t.count).first(where: { !t.data[$0].isFinite }) {
                    throw LongTuneError("\(url.path): tensor \(name) holds \(t.data[i]) at element \(i): "
                                        + "the run diverged before this checkpoint; use an earlier checkpoint")
                }
            }
        }

        /// A trained tensor, which must have `shape` (the model it is applied to decides).
        public func tensor(_ name: String, shape: [Int]) throws -> Tensor {
            guard tensors.entries[name] != nil else {
                throw LongTuneError("\(url.path): adapter.safetensors has no tensor \(name); the checkpoint does not "
                                    + "belong to this model or recipe")
            }
            let t = try tensors.tensor(name)
            guard t.shape == shape else {
                throw LongTuneError("\(url.path): tensor \(name) has shape \(t.shape), the model needs \(shape) "
                                    + "(another rank or base model?)")
            }
            return t
        }

        /// Throws unless `config` is the model this checkpoint was trained on.
        public func requireBase(_ config: LlamaConfig, at path: String) throws {
            guard config.matches(fingerprint: state.modelConfig) else {
                throw LongTuneError("\(path): this base model differs from the one \(url.path) was trained on")
            }
        }
    }

    public static func read(_ url: URL) throws -> Loaded {
        let dir = url.resolvingSymlinksInPath()
        let stateURL = dir.appendingPathComponent("state.json")
        guard let data = try? Data(contentsOf: stateURL) else {
            throw LongTuneError("\(dir.path): not a complete checkpoint (no state.json)")
        }
        let state = try TrainerState.decode(data, source: stateURL.path)
        return Loaded(url: dir, state: state,
                      tensors: try SafetensorsFile(dir.appendingPathComponent("adapter.safetensors")),
                      optimizer: try SafetensorsFile(dir.appendingPathComponent("optimizer.safetensors")))
    }

    static func fsyncPath(_ url: URL) {
        let fd = open(url.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}
