import Adapters
import Engine
import Formats
import Foundation
import Llama

/// Merging a LongTune checkpoint into a standalone Hugging Face model directory, and exporting
/// its adapter in peft's format (docs/CONVENTIONS.md §5).
public enum Merge {
    public struct Report {
        public var tensors = 0
        public var shards = 0
        /// Values outside fp16's finite range, per tensor (clamped to ±fp16 max and reported).
        public var outOfRange: [(String, Int)] = []
    }

    /// Writes `out`: config.json (trained RoPE scaling in both transformers styles,
    /// max_position_embeddings = trained context), model safetensors (sharded above
    /// `maxShardBytes`), tokenizer and generation files copied from the base directory.
    /// Base tensors are read one at a time from the (memory-mapped) base files, merged in fp32
    /// (W + scale·B·A, trained extras replacing theirs), cast once and streamed out, so memory
    /// stays near the largest tensor rather than the model.
    /// `fromQuantized` merges into the weights a QLoRA run trained against (its quantized base,
    /// dequantized) instead of the original full-precision ones (docs/CONVENTIONS.md §14).
    /// `peft`: also a peft adapter there, after the merge. Both outputs are checked before anything is written
    /// (`OutputPath`, docs/CONVENTIONS.md §19).
    public static func run(checkpoint: URL, out: URL, dtype: DType, base: String? = nil, force: Bool = false,
                           maxShardBytes: Int = 2 << 30, fromQuantized: Bool = false,
                           peft: URL? = nil) throws -> Report {
        try OutputPath.check(out.path, option: "--out", kind: .directory(.model), force: force)
        if let peft { try OutputPath.check(peft.path, option: "--peft", kind: .directory(.peftAdapter), force: force) }
        guard maxShardBytes > 0 else {
            throw LongTuneError("merge: the largest shard must be positive, got \(maxShardBytes)")
        }
        let report = try merge(checkpoint: checkpoint, out: out, dtype: dtype, base: base,
                               maxShardBytes: maxShardBytes, fromQuantized: fromQuantized)
        if let peft { try exportPEFT(checkpoint: checkpoint, out: peft, base: base) }
        return report
    }

    /// The largest shard `--max-shard-mib` may ask for: 1 TiB.
    public static let maxShardMiB = 1 << 20

    static func merge(checkpoint: URL, out: URL, dtype: DType, base: String?, maxShardBytes: Int,
                      fromQuantized: Bool) throws -> Report {
        let ck = try Checkpoint.read(checkpoint)
        try ck.requireFiniteTensors()
        let recipe = ck.state.recipe
        let basePath = base ?? recipe.model.path
        let dequantizing = try quantizedBase(fromQuantized, recipe: recipe, checkpoint: checkpoint)
        let weights = try BaseWeights(basePath, recipe: recipe, dequantizing: dequantizing)
        try ck.requireBase(weights.config, at: basePath)
        let merged = MergedTensors(checkpoint: ck, base: weights)
        var report = Report()
        try AtomicDirectory.write(out) { tmp in
            report = try writeShards(merged, config: weights.config, dtype: dtype, maxShardBytes: maxShardBytes,
                                     into: tmp)
            let config = mergedConfig(weights.config, trainedContext: recipe.model.context_length, dtype: dtype)
            try AtomicFile.writeJSON(config, to: tmp.appendingPathComponent("config.json"))
            if ModelSource.isGGUF(basePath) {
                try GGUFTokenizer.write(try GGUFFile(URL(fileURLWithPath: basePath)), to: tmp)
            } else {
                try copyTokenizerFiles(from: URL(fileURLWithPath: basePath), to: tmp)
            }
        }
        return report
    }

    /// With `--from-quantized`, the quantization whose dequantized weights the run trained against (an error for a run
    /// on a full-precision base); nil without it.
    static func quantizedBase(_ fromQuantized: Bool, recipe: Recipe, checkpoint: URL) throws -> Quantization? {
        guard fromQuantized else { return nil }
        guard let q = recipe.model.frozenStorage else {
            throw LongTuneError("\(checkpoint.path): --from-quantized needs a run trained on a quantized base, and "
                                + "this recipe has model.quantization: none; leave the flag out")
        }
        return q
    }

    /// The base model's config (with the recipe's RoPE override) and a way to read its tensors one
    /// at a time: streamed from a model directory, or generated for a built-in model. With
    /// `dequantizing`, the projections a quantized base stores quantized come back dequantized.
    struct BaseWeights {
        let config: LlamaConfig
        let tensor: (String) throws -> Tensor

        init(_ path: String, recipe: Recipe, dequantizing: Quantization? = nil) throws {
            if ModelSource.isGGUF(path) {   // the weights as LongTune trains on them: dequantized blocks
                let gguf = try GGUFFile(URL(fileURLWithPath: path))
                config = try GGUFImport.config(from: gguf).withRopeScaling(recipe.model.rope_scaling)
                let names = GGUFImport.hfNames(gguf)
                let shapes = Dictionary(uniqueKeysWithValues: LlamaForCausalLM(config: config).parameterShapes())
                let cfg = config
                tensor = Self.roundTrip(path: path, config: config, dequantizing: dequantizing, read: { hf in
                    guard let name = names[hf], let shape = shapes[hf] else {
                        throw LongTuneError("\(path): missing tensor \(hf)")
                    }
                    return try GGUFImport.hfTensor(gguf, name, shape: shape, config: cfg)
                }, storedQuantized: { hf in
                    names[hf].flatMap { gguf.tensors[$0] }.map { GGUFFile.isBlockQuantized($0.type) } ?? false
                })
            } else if path.hasPrefix("builtin:") {
                let model = try ModelSource.load(path, ropeOverride: recipe.model.rope_scaling,
                                                 seed: recipe.training.seed, quantization: dequantizing)
                var byName: [String: () -> Tensor] = [:]
                for (name, p) in model.namedParameters() { byName[name] = { p.value } }
                for lin in model.quantizableLinears {
                    if let q = lin.quantized { byName[lin.path + ".weight"] = q.dequantized }
                }
                let embed = model.model.embed_tokens
                if let table = embed.frozen16 { byName[embed.path + ".weight"] = table.widened }
                config = model.config
                tensor = { name in
                    guard let p = byName[name] else { throw LongTuneError("\(path): no tensor \(name)") }
                    return p()
                }
            } else {
                let dir = try ModelDirectory(URL(fileURLWithPath: path))
                config = dir.config.withRopeScaling(recipe.model.rope_scaling)
                tensor = Self.roundTrip(path: path, config: config, dequantizing: dequantizing, read: { name in
                    guard let t = try dir.tensor(name) else { throw LongTuneError("\(path): missing tensor \(name)") }
                    return t
                }, storedQuantized: { _ in false })
            }
        }

        /// `read`, except that with `dequantizing` a projection stored in full precision comes back as its
        /// quantized-then-dequantized values (the weights a QLoRA run trained against).
        static func roundTrip(path: String, config: LlamaConfig, dequantizing: Quantization?,
                              read: @escaping (String) throws -> Tensor,
                              storedQuantized: @escaping (String) -> Bool) -> (String) throws -> Tensor {
            guard let q = dequantizing else { return read }
            let projections = Set(LlamaForCausalLM(config: config).quantizableLinears.map { $0.path + ".weight" })
            return { name in
                let t = try read(name)
                guard projections.contains(name), !storedQuantized(name) else { return t }
                return try q.quantize(t, name: "\(path): \(name)").dequantized()
            }
        }
    }

    /// Each parameter of the merged model: a trained extra as trained, an adapted projection as
    /// W + scale·B·A (the adapter's own merge), anything else as the base has it.
    struct MergedTensors {
        let checkpoint: Checkpoint.Loaded
        let base: BaseWeights

        func tensor(_ name: String) throws -> Tensor {
            let trained = checkpoint.tensors
            let w = try base.tensor(name)
            if trained.entries[name] != nil { return try checkpoint.tensor(name, shape: w.shape) }
            let module = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
            guard trained.entries[module + ".lora_A.weight"] != nil, w.shape.count == 2 else { return w }
            let rank = checkpoint.state.recipe.adapter.rank
            let merged = w.copy()
            LoRALinear.merge(into: merged,
                             a: try checkpoint.tensor(module + ".lora_A.weight", shape: [rank, w.shape[1]]),
                             b: try checkpoint.tensor(module + ".lora_B.weight", shape: [w.shape[0], rank]),
                             scale: checkpoint.state.recipe.adapter.scale)
            return merged
        }
    }

    /// Writes the parameters in HF order into shards of at most `maxShardBytes` (and the index
    /// when there is more than one).
    static func writeShards(_ merged: MergedTensors, config: LlamaConfig, dtype: DType, maxShardBytes: Int,
                            into dir: URL) throws -> Report {
        let params = LlamaForCausalLM(config: config).parameterShapes()
        let shards = shardPlan(params, bytesPerValue: dtype.byteSize, maxShardBytes: maxShardBytes)
        let files = shards.count == 1 ? ["model.safetensors"]
            : (1...shards.count).map { String(format: "model-%05d-of-%05d.safetensors", $0, shards.count) }
        var report = Report(shards: shards.count)
        var weightMap: [String: String] = [:]
        for (shard, file) in zip(shards, files) {
            let writer = try SafetensorsStreamWriter(url: dir.appendingPathComponent(file), tensors: shard,
                                                     dtype: dtype)
            do {
                for (name, _) in shard {
                    var t = try merged.tensor(name)
                    if dtype == .fp16, let (clamped, count) = clampedToHalfRange(t) {
                        t = clamped
                        report.outOfRange.append((name, count))
                    }
                    try writer.write(name, t)
                    weightMap[name] = file
                    report.tensors += 1
                }
                try writer.finish()
            } catch { writer.abandon(); throw error }
        }
        if shards.count > 1 {
            let total = params.reduce(0) { $0 + $1.1.reduce(1, *) * dtype.byteSize }
            let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
            try AtomicFile.writeJSON(object: index,
                                 to: dir.appendingPathComponent("model.safetensors.index.json"))
        }
        return report
    }

    /// Tensors grouped in order into shards by cumulative size.
    static func shardPlan(_ params: [(String, [Int])], bytesPerValue: Int, maxShardBytes: Int) -> [[(String, [Int])]] {
        var shards: [[(String, [Int])]] = [[]]
        var size = 0
        for (name, shape) in params {
            let bytes = shape.reduce(1, *) * bytesPerValue
            if size + bytes > maxShardBytes && !shards[shards.count - 1].isEmpty { shards.append([]); size = 0 }
            shards[shards.count - 1].append((name, shape))
            size += bytes
        }
        return shards
    }

    /// Values past fp16's finite range clamped to ±65504 (never written as inf): the clamped copy and
    /// how many values moved, or nil when all fit.
    static func clampedToHalfRange(_ t: Tensor) -> (Tensor, Int)? {
        let limit = Float(Float16.greatestFiniteMagnitude)
        var out: Tensor?
        var count = 0
        for i in 0..<t.count where abs(t.data[i]) > limit {
            if out == nil { out = t.copy() }
            out!.data[i] = t.data[i] > 0 ? limit : -limit
            count += 1
        }
        return out.map { ($0, count) }
    }

    /// config.json of the merged model: the trained RoPE scaling (with its original length made
    /// explicit) and the trained context as max_position_embeddings (docs/CONVENTIONS.md §3).
    /// transformers has no `ntk_alpha` kind: it is written as what it is, default RoPE with the
    /// larger base.
    static func mergedConfig(_ base: LlamaConfig, trainedContext: Int, dtype: DType) -> LlamaConfig {
        var config = base
        if let s = config.ropeScaling, s.kind == .ntkAlpha, let alpha = s.alpha {
            config.ropeTheta = RopeScaling.ntkAlphaBase(theta: config.ropeTheta, alpha: alpha,
                                                        rotaryDim: config.rotaryDim)
            config.ropeScaling = nil
        }
        if var s = config.ropeScaling, s.originalMaxPositionEmbeddings == nil {
            s.originalMaxPositionEmbeddings = config.maxPositionEmbeddings
            config.ropeScaling = s
        }
        config.maxPositionEmbeddings = max(trainedContext, config.maxPositionEmbeddings)
        config.torchDtype = dtype.torchName
        return config
    }

    static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "generation_config.json", "chat_template.jinja", "tokenizer.model"]

    public static func copyTokenizerFiles(from base: URL, to dir: URL) throws {
        let fm = FileManager.default
        for f in tokenizerFiles where fm.fileExists(atPath: base.appendingPathComponent(f).path) {
            do { try fm.copyItem(at: base.appendingPathComponent(f), to: dir.appendingPathComponent(f)) } catch {
                let reason = (error as NSError).localizedFailureReason ?? "unreadable, or the disk is full"
                throw LongTuneError("\(base.appendingPathComponent(f).path): cannot copy into the merged model "
                                    + "(\(reason))")
            }
        }
    }

    /// peft's adapter_config.json + adapter_model.safetensors for the checkpoint (docs/CONVENTIONS.md §5).
    public static func exportPEFT(checkpoint: URL, out: URL, base: String? = nil) throws {
        let ck = try Checkpoint.read(checkpoint)
        try ck.requireFiniteTensors()
        try AtomicDirectory.write(out) { dir in try writePEFT(ck, base: base, into: dir) }
    }

    static func writePEFT(_ ck: Checkpoint.Loaded, base: String?, into out: URL) throws {
        let names = ck.state.trainable
        let tensors = try names.map { (PEFTNames.prefix + $0, try ck.tensors.tensor($0)) }
        try SafetensorsFile.write(tensors, dtype: .fp32, metadata: ["format": "pt"],
                                  to: out.appendingPathComponent("adapter_model.safetensors"))
        let c = ck.state.recipe.adapter
        let cfg: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": c.rank, "lora_alpha": c.alpha,
            "lora_dropout": c.dropout,
            "target_modules": c.targets.map(\.rawValue), "modules_to_save": PEFTNames.modulesToSave(names),
            "use_rslora": c.rslora, "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": true, "base_model_name_or_path": base ?? ck.state.recipe.model.path,
        ]
        try AtomicFile.writeJSON(object: cfg, to: out.appendingPathComponent("adapter_config.json"))
    }
}

/// peft's names for LongTune's trainable tensors (docs/CONVENTIONS.md §5).
public enum PEFTNames {
    /// What peft puts before an HF parameter name in adapter_model.safetensors.
    public static let prefix = "base_model.model."

    /// peft's `modules_to_save` (matched as name suffixes) for the fully trained tensors among
    /// `trainable`: the last component of each module path, once, in order.
    public static func modulesToSave(_ trainable: [String]) -> [String] {
        var out: [String] = []
        for name in trainable where !name.contains(".lora_") {
            let module = name.split(separator: ".").dropLast().last.map(String.init) ?? name
            if !out.contains(module) { out.append(module) }
        }
        return out
    }
}
