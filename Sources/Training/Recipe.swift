import Adapters
import Engine
import Foundation
import Llama
import Settings

/// A training recipe (YAML): seven sections of documented knobs. Each knob is declared once, below,
/// with its default and its meaning; the accepted keys, the defaults of missing keys and
/// `longtune recipe explain` are all read from these declarations. Unknown keys are errors naming
/// the nearest valid key, and `--set section.key=value` overrides a value before validation.
/// docs/ARCHITECTURE.md lists the code each knob reaches.
public struct Recipe: Codable, Equatable {
    public struct Model: KnobSection {
        @Knob("model directory (config.json + *.safetensors), a llama.cpp .gguf file, or builtin:NAME "
              + "(\(BuiltinModels.names.joined(separator: ", ")))", required: true)
        public var path = ""
        @Knob("RoPE scaling to train with, a config.json-style mapping (rope_type, factor, …); "
              + "unset keeps the model's")
        public var rope_scaling: RopeScaling? = nil
        @Knob("tokens per training sequence (the new context window)", required: true)
        public var context_length = 0
        @Knob("frozen base storage: none (fp32) or nf4 (QLoRA's 4-bit NormalFloat, bitsandbytes-exact)")
        public var quantization = QuantizationKind.none
        @Knob("nf4: store the block scales in 8 bits too (QLoRA's double quantization, 0.37 bit less per weight)")
        public var double_quantization = true
        @Knob("dtype of the frozen weights' matrix products: fp32, or bf16 (weights stored in bf16, fp32 accumulation; "
              + "LoRA, trained extras, norms, softmax and the loss stay fp32)")
        public var compute_dtype = ComputeDType.fp32
        public init() {}

        /// The frozen base's storage (nil: fp32).
        public var frozenStorage: Quantization? { Quantization(quantization, doubleQuant: double_quantization) }
    }

    public enum AttentionKind: String, KnobChoice { case full, s2 }
    public enum S2Shift: String, KnobChoice { case boundaries, roll }

    public struct Attention: KnobSection {
        @Knob("attention while training: full causal, or s2 (LongLoRA's Shift Short Attention); eval is always full")
        public var mode = AttentionKind.s2
        @Knob("S2 group size as a fraction of context_length (the group must be even and divide the context)")
        public var group_ratio = 0.25
        @Knob("S2 shifted heads: boundaries (leak-free, half groups at the ends) or roll (the paper's wrap-around)")
        public var shift = S2Shift.boundaries
        @Knob("ranks sharing each sequence under mpirun (S2 boundaries only): each holds 1/P of its groups and gets "
              + "half a group of keys and values from the rank before; the world is data-parallel ranks × this")
        public var sequence_parallel = 1
        public init() {}
    }

    public struct DataSection: KnobSection {
        @Knob("training data: packed HDF5 file (longtune pack) or builtin:chain", required: true)
        public var train = ""
        @Knob("evaluation data (HDF5 or builtin:chain); unset: no evaluation loss")
        public var eval: String? = nil
        @Knob("evaluation sequences scored at each evaluation (the first ones, in storage order)")
        public var eval_sequences = 4
        @Knob("shuffle the training sequences each epoch (from training.seed); false reads them in storage order")
        public var shuffle = true
        public init() {}
    }

    public struct Training: KnobSection {
        @Knob("optimizer steps to run", required: true)
        public var steps = 0
        @Knob("sequences per forward/backward pass")
        public var batch_size = 1
        @Knob("passes whose gradients add up before each optimizer step (a step sees batch_size × this sequences)")
        public var gradient_accumulation = 1
        @Knob("peak AdamW learning rate of the LoRA adapters")
        public var learning_rate = 2e-4
        @Knob("peak learning rate of the trained embeddings and norms; unset: learning_rate")
        public var extras_learning_rate: Double? = nil
        @Knob("learning-rate schedule after warmup, to 0 at the last step (transformers' schedules)")
        public var schedule = Schedule.cosine
        @Knob("steps of linear warmup from 0 (the first step runs at 0, as in transformers)")
        public var warmup_steps = 0
        @Knob("AdamW decoupled weight decay of the adapters (embeddings and norms get none)")
        public var weight_decay = 0.0
        @Knob("clip the global gradient L2 norm to this; unset: no clipping")
        public var max_grad_norm: Double? = 1.0
        @Knob("recompute each decoder layer in the backward pass instead of keeping its activations")
        public var activation_checkpointing = true
        @Knob("refuse to start when `longtune plan` predicts a peak above the memory available; false: start anyway")
        public var memory_check = true
        @Knob("seed of the adapter initialization, data order and dropout")
        public var seed: UInt64 = 42
        public init() {}
    }

    public struct Checkpoints: KnobSection {
        @Knob("run directory: checkpoints, `latest` and metrics.jsonl", required: true)
        public var dir = ""
        @Knob("write a checkpoint every this many steps (and at the end, and on Ctrl-C)")
        public var every = 100
        @Knob("complete checkpoints kept (the oldest are removed)")
        public var keep = 2
        public init() {}
    }

    public struct Logging: KnobSection {
        @Knob("print a progress line every this many steps")
        public var every = 1
        @Knob("evaluation loss every this many steps (and before the first and after the last); 0: never")
        public var eval_every = 0
        public init() {}
    }

    public var model = Model()
    public var adapter = LoRAConfig()
    public var attention = Attention()
    public var data = DataSection()
    public var training = Training()
    public var checkpoints = Checkpoints()
    public var logging = Logging()

    public init() {}

    /// Reads, overrides, checks keys and values. Every error names the file and the key path.
    public static func load(_ url: URL, overrides: [String] = []) throws -> Recipe {
        let path = url.path
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw LongTuneError("\(path): cannot read the recipe (does the file exist?)")
        }
        let tree = try YAMLTree.load(text, source: path)
        guard var root = (tree ?? [String: Any]()) as? [String: Any] else {
            throw LongTuneError("\(path): the recipe must be a mapping of sections")
        }
        for o in overrides { try apply(override: o, to: &root) }
        let recipe = try decode(root, source: path)
        try recipe.validate(path: path)
        return recipe
    }

    /// Checks the keys of a recipe tree, fills the defaults of missing keys and decodes it (recipe
    /// files and checkpoints' state.json both come through here).
    public static func decode(_ root: [String: Any], source: String) throws -> Recipe {
        try checkKeys(root, source: source)
        try checkFinite(root, path: "", source: source)
        try checkWholeNumbers(root, source: source)
        let json = try JSONSerialization.data(withJSONObject: withDefaults(root))
        do { return try JSONDecoder().decode(Recipe.self, from: json) } catch let e as DecodingError {
            throw LongTuneError("\(source): \(describe(e))")
        }
    }

    /// NaN and infinity are not settings (and JSON cannot carry them): name the key.
    static func checkFinite(_ node: Any, path: String, source: String) throws {
        if let d = node as? [String: Any] {
            for (k, v) in d { try checkFinite(v, path: path.isEmpty ? k : "\(path).\(k)", source: source) }
        } else if let a = node as? [Any] {
            for v in a { try checkFinite(v, path: path, source: source) }
        } else if let x = node as? Double, !x.isFinite {
            throw LongTuneError("\(source): \(path): \(x) is not a finite number")
        }
    }

    /// Knobs declared as integers take whole numbers (non-negative for UInt64): name the key, where
    /// decoding alone would only say the data was not valid.
    static func checkWholeNumbers(_ root: [String: Any], source: String) throws {
        for (name, section) in sections {
            guard let values = root[name] as? [String: Any] else { continue }
            for (key, knob) in type(of: section).knobs {
                guard let value = values[key], !(value is NSNull) else { continue }
                let isInt = knob.valueType == Int.self || knob.valueType == Int?.self
                let isUnsigned = knob.valueType == UInt64.self
                guard isInt || isUnsigned else { continue }
                let whole = value is Int || (value as? Double).map { $0 == $0.rounded() && abs($0) < 0x1p62 } == true
                // Only a whole value converts: Int(1e19) would trap.
                let number = !whole ? nil : (value as? Int) ?? (value as? Double).map { Int($0) }
                if !whole || (isUnsigned && (number ?? -1) < 0) {
                    let bound = isUnsigned ? " ≥ 0" : ""
                    throw LongTuneError("\(source): \(name).\(key): expected a whole number\(bound)"
                                        + ", got \(value)")
                }
            }
        }
    }

    /// (section name, a default instance) in declaration order.
    static var sections: [(name: String, section: any KnobSection)] {
        Mirror(reflecting: Recipe()).children.compactMap { child in
            guard let name = child.label, let section = child.value as? any KnobSection else { return nil }
            return (name, section)
        }
    }

    static func checkKeys(_ root: [String: Any], source: String) throws {
        let names = sections.map(\.name)
        for key in root.keys.sorted() where !names.contains(key) {
            throw unknownKey(key, allowed: names, section: nil, source: source)
        }
        for (name, section) in sections {
            guard let value = root[name] else { continue }
            guard let sub = value as? [String: Any] else {
                throw LongTuneError("\(source): section \"\(name)\" must be a mapping")
            }
            let keys = type(of: section).keys
            for key in sub.keys.sorted() where !keys.contains(key) {
                throw unknownKey(key, allowed: keys, section: name, source: source)
            }
        }
    }

    static func unknownKey(_ key: String, allowed: [String], section: String?, source: String) -> LongTuneError {
        let near = allowed.min { editDistance($0, key) < editDistance($1, key) } ?? ""
        let prefix = section.map { $0 + "." } ?? ""
        return LongTuneError("\(source): unknown key \"\(prefix)\(key)\"; did you mean \"\(prefix)\(near)\"? "
                             + "(allowed: \(allowed.joined(separator: ", ")))")
    }

    /// Missing optional keys (and whole sections without required keys) take their declared
    /// defaults; required keys stay missing, so decoding names them.
    static func withDefaults(_ root: [String: Any]) throws -> [String: Any] {
        var out = root
        for (name, section) in sections {
            let present = root[name] as? [String: Any]
            if present == nil && type(of: section).isRequired { continue }
            var values = try defaults(of: section)
            for (k, v) in present ?? [:] { values[k] = v }
            out[name] = values
        }
        return out
    }

    /// A section's non-required knobs with their default values, as JSON values.
    static func defaults<S: KnobSection>(of section: S) throws -> [String: Any] {
        let all = try JSONSerialization.jsonObject(with: JSONEncoder().encode(section)) as? [String: Any] ?? [:]
        let required = Set(S.knobs.filter(\.knob.required).map(\.key))
        return all.filter { !required.contains($0.key) }
    }

    /// `section.key=value` with value parsed as YAML (numbers, booleans, lists, mappings).
    static func apply(override: String, to root: inout [String: Any]) throws {
        guard let eq = override.firstIndex(of: "=") else {
            throw LongTuneError("--set \(override): expected section.key=value")
        }
        let keyPath = override[..<eq].split(separator: ".").map(String.init)
        let raw = String(override[override.index(after: eq)...])
        guard keyPath.count == 2 else {
            throw LongTuneError("--set \(override): the key must be section.key, e.g. training.steps")
        }
        let value = (try? YAMLTree.load(raw, source: "--set")).flatMap { $0 } ?? raw
        var section = root[keyPath[0]] as? [String: Any] ?? [:]
        section[keyPath[1]] = value
        root[keyPath[0]] = section
    }

    public func validate(path: String) throws {
        func fail(_ key: String, _ why: String) -> LongTuneError { LongTuneError("\(path): \(key): \(why)") }
        if !(2...(1 << 32)).contains(model.context_length) {
            throw fail("model.context_length", "must be in 2...2^32 tokens, got \(model.context_length)")
        }
        if model.rope_scaling?.kind == .dynamic {
            throw fail("model.rope_scaling", "dynamic NTK rescales RoPE with each sequence's length, an inference-time "
                       + "scheme that training at a fixed length would not learn; use linear, yarn or ntk_alpha for "
                       + "training (dynamic stays available in eval via --rope-scaling)")
        }
        do { try adapter.validate(source: "adapter") } catch let e as LongTuneError {
            throw LongTuneError("\(path): \(e.description)")
        }
        if attention.mode == .s2 {
            do {
                _ = try AttentionLayout.s2GroupSize(length: model.context_length, ratio: attention.group_ratio)
            } catch {
                throw fail("attention.group_ratio", "\(error) (model.context_length is \(model.context_length))")
            }
        }
        do {   // docs/CONVENTIONS.md §17: the rule's one place
            _ = try SequenceShare.haloRows(length: model.context_length, attention: attentionMode,
                                           ranks: attention.sequence_parallel, option: "attention.sequence_parallel")
        } catch let e as LongTuneError { throw LongTuneError("\(path): \(e.description)") }
        try training.validate(fail)
        guard checkpoints.every > 0 else { throw fail("checkpoints.every", "must be positive") }
        guard checkpoints.keep > 0 else { throw fail("checkpoints.keep", "must be at least 1") }
        guard logging.every > 0 else { throw fail("logging.every", "must be positive") }
        guard logging.eval_every >= 0 else { throw fail("logging.eval_every", "must be 0 (never) or positive") }
        guard data.eval_sequences > 0 else { throw fail("data.eval_sequences", "must be positive") }
    }

    public var attentionMode: AttentionMode {
        attention.mode == .full ? .full : .s2(groupRatio: attention.group_ratio, roll: attention.shift == .roll)
    }

    /// Learning-rate multiplier of the 0-based `step`.
    public func lrScale(step: Int) -> Double {
        training.schedule.factor(step: step, warmup: training.warmup_steps, total: training.steps)
    }
}

extension Recipe.Training {
    func validate(_ fail: (String, String) -> LongTuneError) throws {
        guard steps > 0 else { throw fail("training.steps", "must be positive") }
        guard batch_size > 0 else { throw fail("training.batch_size", "must be positive") }
        guard gradient_accumulation > 0 else { throw fail("training.gradient_accumulation", "must be positive") }
        guard learning_rate > 0, learning_rate.isFinite else {
            throw fail("training.learning_rate", "must be positive")
        }
        if let lr = extras_learning_rate, !(lr >= 0 && lr.isFinite) {
            throw fail("training.extras_learning_rate", "must be 0 or positive")
        }
        guard warmup_steps >= 0, warmup_steps <= steps else {
            throw fail("training.warmup_steps", "must be in 0...steps")
        }
        guard weight_decay >= 0, weight_decay.isFinite else {
            throw fail("training.weight_decay", "must be 0 or positive")
        }
        if let m = max_grad_norm, !(m > 0 && m.isFinite) {
            throw fail("training.max_grad_norm", "must be positive; leave it unset (null) to turn clipping off")
        }
    }
}

/// transformers' learning-rate schedules with linear warmup (get_constant_schedule_with_warmup,
/// get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup; docs/CONVENTIONS.md §7).
public enum Schedule: String, KnobChoice {
    case constant, linear, cosine

    /// Multiplier of the peak rate at the 0-based `step`: step/warmup during warmup (0 at the first
    /// step), then 1, (n − step)/(n − w) or ½(1 + cos(π·(step − w)/(n − w))).
    public func factor(step: Int, warmup w: Int, total n: Int) -> Double {
        if step < w { return Double(step) / Double(w) }
        let progress = Double(step - w) / Double(max(1, n - w))
        switch self {
        case .constant: return 1
        case .linear: return max(0, 1 - progress)
        case .cosine: return max(0, 0.5 * (1 + Foundation.cos(.pi * progress)))
        }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var prev = row[0]; row[0] = i
        for j in 1...max(b.count, 1) where !b.isEmpty {
            let cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
            prev = cur
        }
    }
    return row[b.count]
}
