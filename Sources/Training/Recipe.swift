import Adapters
import Engine
import Foundation
import Llama
import Yams

/// A training recipe (YAML). Keys mirror these types; unknown keys are errors naming the nearest
/// valid key, and `--set section.key=value` overrides a value before validation.
public struct Recipe: Codable, Equatable {
    public struct Model: Codable, Equatable {
        public var path: String
        public var rope_scaling: RopeScaling?
        public var context_length: Int
    }
    public struct Attention: Codable, Equatable {
        public var mode: String = "s2"            // full | s2
        public var group_ratio: Double = 0.25
        public var shift: String = "boundaries"   // boundaries | roll
    }
    public struct DataSection: Codable, Equatable {
        public var train: String
        public var eval: String?
        public var eval_sequences: Int = 4
    }
    public struct Training: Codable, Equatable {
        public var steps: Int
        public var batch_size: Int = 1
        public var gradient_accumulation: Int = 1
        public var learning_rate: Double = 2e-4
        public var extras_learning_rate: Double?
        public var schedule: String = "cosine"    // constant | linear | cosine
        public var warmup_steps: Int = 0
        public var weight_decay: Double = 0
        public var max_grad_norm: Double? = 1.0
        public var activation_checkpointing: Bool = true
        public var seed: UInt64 = 42
    }
    public struct Checkpoints: Codable, Equatable {
        public var dir: String
        public var every: Int = 100
        public var keep: Int = 2
    }
    public struct Logging: Codable, Equatable {
        public var every: Int = 1
        public var eval_every: Int = 0
    }

    public var model: Model
    public var adapter: LoRAConfig
    public var attention: Attention
    public var data: DataSection
    public var training: Training
    public var checkpoints: Checkpoints
    public var logging: Logging

    /// Allowed keys per section (for unknown-key errors) and the sections themselves.
    static let schema: [String: [String]] = [
        "": ["model", "adapter", "attention", "data", "training", "checkpoints", "logging"],
        "model": ["path", "rope_scaling", "context_length"],
        "adapter": ["kind", "rank", "alpha", "dropout", "rslora", "targets", "trainable"],
        "attention": ["mode", "group_ratio", "shift"],
        "data": ["train", "eval", "eval_sequences"],
        "training": ["steps", "batch_size", "gradient_accumulation", "learning_rate", "extras_learning_rate", "schedule",
                     "warmup_steps", "weight_decay", "max_grad_norm", "activation_checkpointing", "seed"],
        "checkpoints": ["dir", "every", "keep"],
        "logging": ["every", "eval_every"],
    ]

    /// Reads, overrides, checks keys and values. Every error names the file and the key path.
    public static func load(_ url: URL, overrides: [String] = []) throws -> Recipe {
        let path = url.path
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw EngineError("\(path): cannot read the recipe (does the file exist?)")
        }
        var tree: Any
        do { tree = try Yams.load(yaml: text) ?? [String: Any]() } catch {
            throw EngineError("\(path): malformed YAML: \(error)")
        }
        guard var root = tree as? [String: Any] else { throw EngineError("\(path): the recipe must be a mapping of sections") }
        for o in overrides { try apply(override: o, to: &root, path: path) }
        try checkKeys(root, section: "", path: path)
        try fillDefaults(&root)
        tree = root
        let recipe: Recipe
        do {
            let json = try JSONSerialization.data(withJSONObject: normalize(tree))
            recipe = try JSONDecoder().decode(Recipe.self, from: json)
        } catch let e as DecodingError {
            throw EngineError("\(path): \(describe(e))")
        }
        try recipe.validate(path: path)
        return recipe
    }

    static func checkKeys(_ node: [String: Any], section: String, path: String) throws {
        let allowed = schema[section]!
        for key in node.keys.sorted() where !allowed.contains(key) {
            let near = allowed.min { editDistance($0, key) < editDistance($1, key) }!
            let at = section.isEmpty ? key : "\(section).\(key)"
            throw EngineError("\(path): unknown key \"\(at)\"; did you mean \"\(section.isEmpty ? near : "\(section).\(near)")\"? (allowed: \(allowed.joined(separator: ", ")))")
        }
        if section.isEmpty {
            for (key, value) in node {
                guard let sub = value as? [String: Any] else { throw EngineError("\(path): section \"\(key)\" must be a mapping") }
                try checkKeys(sub, section: key, path: path)
            }
        }
    }

    /// Optional keys (and whole optional sections) take the defaults of the Codable types above.
    static func fillDefaults(_ root: inout [String: Any]) throws {
        func dict<T: Encodable>(_ v: T, dropping: String? = nil) throws -> [String: Any] {
            var d = try JSONSerialization.jsonObject(with: JSONEncoder().encode(v)) as! [String: Any]
            if let dropping { d[dropping] = nil }
            return d
        }
        let defaults: [String: [String: Any]] = [
            "adapter": try dict(LoRAConfig()), "attention": try dict(Attention()), "logging": try dict(Logging()),
            "data": ["eval_sequences": 4],
            "training": try dict(Training(steps: 0), dropping: "steps"),
            "checkpoints": try dict(Checkpoints(dir: ""), dropping: "dir"),
        ]
        for (section, values) in defaults {
            var sub = root[section] as? [String: Any] ?? [:]
            for (k, v) in values where sub[k] == nil { sub[k] = v }
            if root[section] == nil, !["adapter", "attention", "logging"].contains(section) && sub.count == values.count {
                continue   // a required section stays missing, so decoding names it
            }
            root[section] = sub
        }
    }

    /// `section.key=value` with value parsed as YAML (numbers, booleans, lists).
    static func apply(override: String, to root: inout [String: Any], path: String) throws {
        guard let eq = override.firstIndex(of: "=") else { throw EngineError("--set \(override): expected section.key=value") }
        let keyPath = override[..<eq].split(separator: ".").map(String.init)
        let raw = String(override[override.index(after: eq)...])
        guard keyPath.count == 2 else { throw EngineError("--set \(override): the key must be section.key, e.g. training.steps") }
        let value = (try? Yams.load(yaml: raw)).flatMap { $0 } ?? raw
        var section = root[keyPath[0]] as? [String: Any] ?? [:]
        section[keyPath[1]] = value
        root[keyPath[0]] = section
    }

    /// Yams gives Int/Double/Bool/String; JSONSerialization needs Foundation types.
    static func normalize(_ v: Any) -> Any {
        if let d = v as? [String: Any] { return d.mapValues(normalize) }
        if let a = v as? [Any] { return a.map(normalize) }
        return v
    }

    public func validate(path: String) throws {
        func fail(_ key: String, _ why: String) -> EngineError { EngineError("\(path): \(key): \(why)") }
        if model.context_length < 2 { throw fail("model.context_length", "must be at least 2, got \(model.context_length)") }
        if model.rope_scaling?.kind == .dynamic {
            throw fail("model.rope_scaling", "dynamic NTK rescales RoPE with each sequence's length, an inference-time scheme that training at a fixed length would not learn; use linear, yarn or ntk_alpha for training (dynamic stays available in eval via --rope-scaling)")
        }
        do { try adapter.validate(source: "adapter") } catch let e as EngineError { throw EngineError("\(path): \(e.description)") }
        guard ["full", "s2"].contains(attention.mode) else { throw fail("attention.mode", "\"\(attention.mode)\": use full or s2") }
        guard ["boundaries", "roll"].contains(attention.shift) else { throw fail("attention.shift", "\"\(attention.shift)\": use boundaries or roll") }
        if attention.mode == "s2" {
            let g = Double(model.context_length) * attention.group_ratio
            guard g >= 2, g == g.rounded(), Int(g) % 2 == 0, model.context_length % Int(g) == 0 else {
                throw fail("attention.group_ratio", "\(attention.group_ratio) × context_length \(model.context_length) must be an even whole group size dividing the context")
            }
        }
        guard training.steps > 0 else { throw fail("training.steps", "must be positive") }
        guard training.batch_size > 0 else { throw fail("training.batch_size", "must be positive") }
        guard training.gradient_accumulation > 0 else { throw fail("training.gradient_accumulation", "must be positive") }
        guard training.learning_rate > 0 else { throw fail("training.learning_rate", "must be positive") }
        guard ["constant", "linear", "cosine"].contains(training.schedule) else {
            throw fail("training.schedule", "\"\(training.schedule)\": use constant, linear or cosine")
        }
        guard training.warmup_steps >= 0, training.warmup_steps <= training.steps else { throw fail("training.warmup_steps", "must be in 0...steps") }
        guard checkpoints.every > 0 else { throw fail("checkpoints.every", "must be positive") }
        guard checkpoints.keep > 0 else { throw fail("checkpoints.keep", "must be at least 1") }
    }

    public var attentionMode: AttentionMode {
        attention.mode == "full" ? .full : .s2(groupRatio: attention.group_ratio, roll: attention.shift == "roll")
    }

    /// Learning-rate multiplier at `step` (0-based): linear warmup, then the schedule to 0.
    public func lrScale(step: Int) -> Double {
        let w = training.warmup_steps, n = training.steps
        if step < w { return Double(step + 1) / Double(w) }
        let progress = n > w ? Double(step - w) / Double(n - w) : 1
        switch training.schedule {
        case "linear": return 1 - progress
        case "cosine": return 0.5 * (1 + Foundation.cos(.pi * progress))
        default: return 1
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
