import Adapters
import Engine
import Formats
import Foundation
import Llama

/// Merging a LongTune checkpoint into a standalone Hugging Face model directory, and exporting
/// its adapter in peft's format.
public enum Merge {
    public struct Report {
        public var tensors = 0
        public var shards = 0
        /// Values outside fp16's finite range, per tensor (clamped to ±65504 and reported).
        public var outOfRange: [(String, Int)] = []
    }

    /// A checkpoint's model rebuilt with its trained tensors applied (adapters attached).
    public static func load(checkpoint: URL, base: String? = nil) throws -> (Checkpoint.Loaded, LoRAModel) {
        let ck = try Checkpoint.read(checkpoint)
        let r = ck.state.recipe
        let model = try ModelSource.load(base ?? r.model.path, ropeOverride: r.model.rope_scaling, seed: r.training.seed)
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        guard String(decoding: try enc.encode(model.config), as: UTF8.self) == ck.state.modelConfig else {
            throw EngineError("\(base ?? r.model.path): this base model differs from the one \(ck.url.path) was trained on")
        }
        let lora = try LoRAModel(model, config: r.adapter, seed: r.training.seed)
        for (n, p) in lora.trainableParameters { p.value = try ck.tensors.tensor(n) }
        return (ck, lora)
    }

    /// Writes `out`: config.json (trained RoPE scaling in both transformers styles,
    /// max_position_embeddings = trained context), model safetensors (sharded above
    /// `maxShardBytes`), tokenizer and generation files copied from the base directory.
    /// Base tensors are read one at a time from the (memory-mapped) base files, merged in fp32
    /// (W + scale·B·A, trained extras replacing theirs), cast once and streamed out, so memory
    /// stays near the largest tensor rather than the model.
    public static func run(checkpoint: URL, out: URL, dtype: DType, base: String? = nil, force: Bool = false,
                           maxShardBytes: Int = 2 << 30, log: (String) -> Void = { _ in }) throws -> Report {
        let fm = FileManager.default
        if fm.fileExists(atPath: out.path) {
            guard force else { throw EngineError("\(out.path) exists; pass --force to replace it") }
        }
        let ck = try Checkpoint.read(checkpoint)
        let recipe = ck.state.recipe
        let basePath = base ?? recipe.model.path
        // Base tensors: streamed from a model directory, or generated for a built-in model.
        var config: LlamaConfig
        let fetch: (String) throws -> Tensor
        if basePath.hasPrefix("builtin:") {
            let model = try ModelSource.load(basePath, ropeOverride: recipe.model.rope_scaling, seed: recipe.training.seed)
            config = model.config
            let byName = Dictionary(uniqueKeysWithValues: model.namedParameters())
            fetch = { byName[$0]!.value }
        } else {
            let dir = try ModelDirectory(URL(fileURLWithPath: basePath))
            config = dir.config
            if let rs = recipe.model.rope_scaling { config.ropeScaling = rs.kind == .default ? nil : rs }
            fetch = { name in
                guard let t = try dir.tensor(name) else { throw EngineError("\(basePath): missing tensor \(name)") }
                return t
            }
        }
        let enc0 = JSONEncoder(); enc0.outputFormatting = [.sortedKeys]
        guard String(decoding: try enc0.encode(config), as: UTF8.self) == ck.state.modelConfig else {
            throw EngineError("\(basePath): this base model differs from the one \(ck.url.path) was trained on")
        }
        let lc = recipe.adapter
        let scale = Float(lc.rsLoRA ? lc.alpha / Double(lc.rank).squareRoot() : lc.alpha / Double(lc.rank))
        let trained = Set(ck.tensors.names)

        let tmp = out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).tmp-\(getpid())")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        var report = Report()
        do {
            let params = config.parameterShapes()
            // Shards by cumulative size, in parameter order.
            var shards: [[(String, [Int])]] = [[]]
            var size = 0
            for (n, shape) in params {
                let bytes = shape.reduce(1, *) * dtype.byteSize
                if size + bytes > maxShardBytes && !shards[shards.count - 1].isEmpty { shards.append([]); size = 0 }
                shards[shards.count - 1].append((n, shape)); size += bytes
            }
            let names = shards.count == 1 ? ["model.safetensors"]
                : (1...shards.count).map { String(format: "model-%05d-of-%05d.safetensors", $0, shards.count) }
            var weightMap: [String: String] = [:]
            for (shard, fileName) in zip(shards, names) {
                let w = try SafetensorsStreamWriter(url: tmp.appendingPathComponent(fileName), tensors: shard, dtype: dtype)
                do {
                    for (n, _) in shard {
                        var t: Tensor
                        let module = n.hasSuffix(".weight") ? String(n.dropLast(".weight".count)) : n
                        if trained.contains(n) {
                            t = try ck.tensors.tensor(n)                                  // a trained extra
                        } else if trained.contains(module + ".lora_A.weight") {
                            t = try fetch(n).copy()                                       // W + scale·B·A in fp32
                            BLAS.gemm(try ck.tensors.tensor(module + ".lora_B.weight"), try ck.tensors.tensor(module + ".lora_A.weight"),
                                      alpha: scale, beta: 1, into: t)
                        } else {
                            t = try fetch(n)
                        }
                        if dtype == .fp16 {
                            // Values past fp16's range are clamped to ±65504 and reported, never written as inf.
                            var bad = 0
                            for i in 0..<t.count where abs(t.data[i]) > 65504 {
                                if bad == 0 { t = t.copy() }
                                t.data[i] = t.data[i] > 0 ? 65504 : -65504; bad += 1
                            }
                            if bad > 0 { report.outOfRange.append((n, bad)) }
                        }
                        try w.write(n, t)
                        weightMap[n] = fileName
                        report.tensors += 1
                    }
                    try w.finish()
                } catch { w.abandon(); throw error }
            }
            report.shards = shards.count
            if shards.count > 1 {
                let total = params.reduce(0) { $0 + $1.1.reduce(1, *) * dtype.byteSize }
                let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
                try AtomicFile.write(try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]),
                                     to: tmp.appendingPathComponent("model.safetensors.index.json"))
            }
            if var s = config.ropeScaling, s.originalMaxPositionEmbeddings == nil, s.kind != .ntkAlpha {
                s.originalMaxPositionEmbeddings = config.maxPositionEmbeddings
                config.ropeScaling = s
            }
            config.maxPositionEmbeddings = max(recipe.model.context_length, config.maxPositionEmbeddings)
            config.torchDtype = ["fp32": "float32", "fp16": "float16", "bf16": "bfloat16"][dtype.rawValue]
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try enc.encode(config), to: tmp.appendingPathComponent("config.json"))
            let baseDir = URL(fileURLWithPath: basePath)
            for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                      "chat_template.jinja", "tokenizer.model"] where fm.fileExists(atPath: baseDir.appendingPathComponent(f).path) {
                try fm.copyItem(at: baseDir.appendingPathComponent(f), to: tmp.appendingPathComponent(f))
            }
            if fm.fileExists(atPath: out.path) { try fm.removeItem(at: out) }
            guard rename(tmp.path, out.path) == 0 else { throw EngineError("\(out.path): rename failed: \(String(cString: strerror(errno)))") }
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
        return report
    }

    /// peft's adapter_config.json + adapter_model.safetensors for the checkpoint (SPEC §5).
    public static func exportPEFT(checkpoint: URL, out: URL, base: String? = nil) throws {
        let ck = try Checkpoint.read(checkpoint)
        let fm = FileManager.default
        try fm.createDirectory(at: out, withIntermediateDirectories: true)
        let tensors = try ck.state.trainable.map { ("base_model.model." + $0, try ck.tensors.tensor($0)) }
        try SafetensorsFile.write(tensors, dtype: .fp32, metadata: ["format": "pt"], to: out.appendingPathComponent("adapter_model.safetensors"))
        let c = ck.state.recipe.adapter
        var modules: [String] = []
        if c.trainable.contains("embed_tokens") { modules.append("embed_tokens") }
        if c.trainable.contains("norm") { modules += ["input_layernorm", "post_attention_layernorm", "norm"] }
        if c.trainable.contains("lm_head") { modules.append("lm_head") }
        let cfg: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": c.rank, "lora_alpha": c.alpha, "lora_dropout": c.dropout,
            "target_modules": c.targets, "modules_to_save": modules, "use_rslora": c.rsLoRA, "bias": "none",
            "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
            "base_model_name_or_path": base ?? ck.state.recipe.model.path,
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: cfg, options: [.prettyPrinted, .sortedKeys]),
                             to: out.appendingPathComponent("adapter_config.json"))
    }
}
