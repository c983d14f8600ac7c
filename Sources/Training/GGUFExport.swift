import Engine
import Formats
import Foundation
import Llama

/// A model directory or a checkpoint (merged on the fly) written as one llama.cpp GGUF file: llama.cpp's tensor
/// names and q/k row order, the tensor types convert_hf_to_gguf.py (f32/f16/bf16/q8_0) or llama-quantize (q4_0 and
/// the K-quant mixes) would choose, and the metadata llama.cpp reads, trained RoPE scaling included
/// (docs/CONVENTIONS.md §20). Tensors are produced, converted and written one at a time.
public enum GGUFExport {
    /// What `--type` asks for: a whole-file type, as llama.cpp's `general.file_type` numbers them.
    public enum FileType: String, CaseIterable, Sendable {
        case f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k

        /// `general.file_type` (llama.cpp's LLAMA_FTYPE_*).
        var fileTypeNumber: UInt32 {
            switch self {
            case .f32: 0
            case .f16: 1
            case .q4_0: 2
            case .q8_0: 7
            case .q4_k_m: 15
            case .q5_k_m: 17
            case .q6_k: 18
            case .bf16: 32
            }
        }
        /// The type of an ordinary weight matrix before llama-quantize's per-tensor rules.
        var defaultType: GGMLType {
            switch self {
            case .f32: .f32
            case .f16: .f16
            case .bf16: .bf16
            case .q8_0: .q8_0
            case .q4_0: .q4_0
            case .q4_k_m: .q4_K
            case .q5_k_m: .q5_K
            case .q6_k: .q6_K
            }
        }
        /// Types convert_hf_to_gguf.py writes itself; the others are llama-quantize's.
        var isConverterType: Bool { [.f32, .f16, .bf16, .q8_0].contains(self) }
    }

    public struct Report {
        public var tensors = 0
        public var bytes = 0
        /// Tensors per ggml type name.
        public var types: [String: Int] = [:]
        public var config: LlamaConfig
        /// What the user should know to run the file (e.g. llama.cpp flags an adapter's base needs).
        public var notes: [String] = []
        /// The RoPE scaling the file carries, for the command's summary.
        public var ropeNote: String {
            guard let s = config.ropeScaling, s.kind != .default else { return "" }
            return ", RoPE \(s.kind.rawValue)" + (s.factor.map { " ×\($0)" } ?? "")
                + (s.originalMaxPositionEmbeddings.map { " of \($0)" } ?? "")
        }
    }

    /// Writes `out` from `source` (a model directory, or a checkpoint merged with its base as `merge` does).
    /// `fromQuantized`: a QLoRA checkpoint merges into the NF4 weights it trained on (dequantized), as
    /// `merge --from-quantized` does.
    public static func run(source: URL, out: URL, type: FileType, base: String? = nil, fromQuantized: Bool = false,
                           tokenizerPre: String? = nil, log: (String) -> Void = { _ in }) throws -> Report {
        try OutputPath.check(out.path, option: "--out", kind: .file)
        let model = try ExportSource(source, base: base, fromQuantized: fromQuantized, tokenizerPre: tokenizerPre)
        try requireExportable(model.config, source: source.path)
        let metadata = try self.metadata(model, type: type)
        return try write(out, metadata: metadata, plan: tensorPlan(model.config, type: type), config: model.config,
                         log: log) { try storedBytes($0, model: model) }
    }

    /// Streams the planned tensors (each produced by `bytes`) into `out` under `metadata`.
    static func write(_ out: URL, metadata: [(String, GGUFValue)], plan: [PlannedTensor], config: LlamaConfig,
                      log: (String) -> Void, bytes storedBytes: (PlannedTensor) throws -> [UInt8]) throws -> Report {
        let writer = try GGUFWriter(url: out, metadata: metadata, tensors: plan.map(\.tensor))
        var report = Report(config: config)
        do {
            for entry in plan {
                let bytes = try storedBytes(entry)
                try bytes.withUnsafeBytes { try writer.write(entry.tensor.name, bytes: $0) }
                report.tensors += 1
                report.bytes += bytes.count
                report.types[entry.tensor.type.name, default: 0] += 1
                log("\(entry.tensor.name) \(entry.shape) -> \(entry.tensor.type.name)")
            }
            try writer.finish()
        } catch { writer.abandon(); throw error }
        return report
    }

    /// One tensor of the file: its llama.cpp name, HF name and shape, stored type.
    struct PlannedTensor {
        let tensor: GGUFWriter.Tensor
        let hfName: String
        let shape: [Int]
        /// Values computed rather than read (llama3's rope_freqs).
        var values: [Float]? = nil
    }

    /// Every parameter in llama.cpp's order (model-level tensors by name, then each block's by name — the order
    /// llama-quantize visits them, which its per-layer rules count in) with its type.
    static func tensorPlan(_ config: LlamaConfig, type: FileType) -> [PlannedTensor] {
        let arch = architecture(of: config)
        let params = LlamaForCausalLM(config: config).parameterShapes().compactMap { hf, shape in
            GGUFImport.ggufName(hf, architecture: arch).map { (gguf: $0, hf: hf, shape: shape) }
        }
        func layer(_ n: String) -> Int { n.hasPrefix("blk.") ? Int(n.split(separator: ".")[1]) ?? -1 : -1 }
        let ordered = params.sorted { (layer($0.gguf), $0.gguf) < (layer($1.gguf), $1.gguf) }
        var mix = QuantizationMix(type: type, layers: config.numHiddenLayers,
                                  tiedOutput: !params.contains { $0.gguf == "output.weight" })
        let weights = ordered.map { p in
            PlannedTensor(tensor: GGUFWriter.Tensor(name: p.gguf, shape: p.shape,
                                                    type: mix.type(p.gguf, shape: p.shape)),
                          hfName: p.hf, shape: p.shape)
        }
        return ropeTensors(config).map { name, values in
            PlannedTensor(tensor: GGUFWriter.Tensor(name: name, shape: [values.count], type: .f32), hfName: "",
                          shape: [values.count], values: values)
        } + weights
    }

    /// RoPE values llama.cpp reads as tensors: llama3's divisors (`rope_freqs`), longrope's factors (Phi-3's
    /// `rope_factors_long` and `rope_factors_short`), in the converter's order.
    static func ropeTensors(_ config: LlamaConfig) -> [(String, [Float])] {
        if let factors = llama3RopeFactors(config) { return [("rope_freqs.weight", factors)] }
        guard let s = config.ropeScaling, s.kind == .longrope, let long = s.longFactor, let short = s.shortFactor else {
            return []
        }
        return [("rope_factors_long.weight", long.map(Float.init)),
                ("rope_factors_short.weight", short.map(Float.init))]
    }

    /// llama3 scaling as llama.cpp runs it: a divisor per rotary frequency (the rope_freqs tensor), 1 for wavelengths
    /// under original/high_freq_factor, `factor` above original/low_freq_factor, blended between — computed in fp32
    /// as convert_hf_to_gguf.py computes it (docs/CONVENTIONS.md §2, §20).
    static func llama3RopeFactors(_ c: LlamaConfig) -> [Float]? {
        guard let s = c.ropeScaling, s.kind == .llama3 else { return nil }
        let factor = Float(s.factor ?? 8), low = Float(s.lowFreqFactor ?? 1), high = Float(s.highFreqFactor ?? 4)
        let original = Float(s.originalMaxPositionEmbeddings ?? 8192), dim = c.rotaryDim
        let lowWavelength = original / low, highWavelength = original / high
        return stride(from: 0, to: dim, by: 2).map { k in
            let freq = 1 / Float(pow(c.ropeTheta, Double(Float(k) / Float(dim))))
            let wavelength = Float(2 * Double.pi) / freq   // 2π rounded to nearest (Float.pi rounds toward zero)
            if wavelength < highWavelength { return 1 }
            if wavelength > lowWavelength { return factor }
            let smooth = (original / wavelength - low) / (high - low)
            return 1 / ((1 - smooth) / factor + smooth)
        }
    }

    /// A LoRA adapter GGUF (convert_lora_to_gguf.py's layout: `<tensor>.lora_a` [r, in], `<tensor>.lora_b` [out, r]
    /// with q/k rows in llama.cpp's order, `adapter.lora.alpha`) that llama.cpp's `--lora` applies to the base's GGUF.
    public static func runAdapter(checkpoint url: URL, out: URL, type: FileType,
                                  log: (String) -> Void = { _ in }) throws -> Report {
        try OutputPath.check(out.path, option: "--out", kind: .file)
        guard type.isConverterType else {
            throw LongTuneError("--adapter --type \(type.rawValue): LoRA matrices are written as f32, f16, bf16 or "
                                + "q8_0 (their rank-sized rows fit no K-quant); quantize the base model instead")
        }
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("state.json").path) else {
            throw LongTuneError("\(url.path): --adapter needs a checkpoint (state.json), such as "
                                + "checkpoints/RUN/latest")
        }
        let ck = try Checkpoint.read(url)
        try ck.requireFiniteTensors()
        let extras = ck.state.trainable.filter { !$0.contains(".lora_") }
        guard extras.isEmpty else {
            throw LongTuneError("\(url.path): the run also trained \(extras.count) tensors besides LoRA "
                                + "(\(extras[0]), …: adapter.trainable), which llama.cpp's --lora cannot apply; "
                                + "export the merged model (export-gguf without --adapter)")
        }
        let r = ck.state.recipe, config = try ModelSource.config(r.model.path)
        try requireExportable(config, source: url.path)
        let trained = Merge.mergedConfig(config.withRopeScaling(r.model.rope_scaling),
                                         trainedContext: r.model.context_length, dtype: .fp32)
        let alpha = r.adapter.rslora ? r.adapter.alpha * Double(r.adapter.rank).squareRoot() : r.adapter.alpha
        let arch = architecture(of: config)
        let metadata: [(String, GGUFValue)] = [
            ("general.architecture", .string(arch)), ("general.type", .string("adapter")),
            ("general.name", .string(url.standardizedFileURL.deletingLastPathComponent().lastPathComponent)),
            ("adapter.type", .string("lora")), ("adapter.lora.alpha", .f32(Float(alpha))),
        ]
        var mix = QuantizationMix(type: type, layers: config.numHiddenLayers, tiedOutput: false)
        let plan: [PlannedTensor] = ck.state.trainable.sorted().compactMap { name in
            guard let entry = ck.tensors.entries[name], let module = name.components(separatedBy: ".lora_").first,
                  let gguf = GGUFImport.ggufName(module + ".weight", architecture: arch) else { return nil }
            let suffix = name.contains(".lora_A.") ? ".lora_a" : ".lora_b"
            return PlannedTensor(tensor: GGUFWriter.Tensor(name: gguf + suffix, shape: entry.shape,
                                                           type: mix.type(gguf + suffix, shape: entry.shape)),
                                 hfName: name, shape: entry.shape)
        }
        var report = try write(out, metadata: metadata, plan: plan, config: config, log: log) { entry in
            var t = try ck.tensor(entry.hfName, shape: entry.shape)
            let base = String(entry.tensor.name.dropLast(".lora_b".count))
            if entry.tensor.name.hasSuffix(".lora_b"),
               let heads = GGUFImport.permutedHeads(base, config, architecture: arch) {
                t = permuted(t, heads: heads)
            }
            return quantizedRows(t, entry.tensor)
        }
        if trained.ropeScaling != config.ropeScaling || trained.ropeTheta != config.ropeTheta {
            report.notes.append(ropeFlagsNote(trained))
        }
        return report
    }

    /// How to run an adapter whose run changed RoPE, which an adapter file cannot carry: llama.cpp's flags for it.
    static func ropeFlagsNote(_ c: LlamaConfig) -> String {
        let s = c.ropeScaling
        var flags = "-c \(c.maxPositionEmbeddings) --rope-freq-base \(Int(c.ropeTheta))"
        switch s?.kind {
        case .linear?: flags += " --rope-scaling linear --rope-scale \(s!.factor ?? 1)"
        case .yarn?:
            flags += " --rope-scaling yarn --rope-scale \(s!.factor ?? 1) --yarn-orig-ctx "
                + "\(s!.originalMaxPositionEmbeddings ?? c.maxPositionEmbeddings)"
        case nil, .default?, .ntkAlpha?: break
        default:
            return "the run trained with RoPE \(s!.kind.rawValue), which neither an adapter nor llama.cpp's flags "
                + "carry: export the merged model (without --adapter)"
        }
        return "the run trained with other RoPE settings than the base's, which an adapter file cannot carry: run "
            + "llama.cpp with \(flags) beside --lora, or export the merged model (without --adapter)"
    }

    /// The tensor in its stored bytes: q/k rows in llama.cpp's order, converted or quantized row by row.
    static func storedBytes(_ entry: PlannedTensor, model: ExportSource) throws -> [UInt8] {
        if let values = entry.values { return quantizedRows(Tensor(shape: entry.shape, values), entry.tensor) }
        var t = try model.tensor(entry.hfName)
        guard t.shape == entry.shape else {
            throw LongTuneError("\(model.url.path): tensor \(entry.hfName) has shape \(t.shape), "
                                + "the config implies \(entry.shape)")
        }
        let arch = architecture(of: model.config)
        if let heads = GGUFImport.permutedHeads(entry.tensor.name, model.config, architecture: arch) {
            t = permuted(t, heads: heads)
        }
        let shift = GGUFImport.normShift(entry.tensor.name, architecture: arch)
        if shift != 0 { t = t.copy(); for i in 0..<t.count { t.data[i] += shift } }
        return quantizedRows(t, entry.tensor)
    }

    /// `t` converted or quantized row by row into `tensor`'s type.
    static func quantizedRows(_ t: Tensor, _ tensor: GGUFWriter.Tensor) -> [UInt8] {
        let type = tensor.type, columns = tensor.dims[0], rows = t.count / columns
        var bytes = [UInt8](repeating: 0, count: tensor.bytes)
        let rowBytes = type.rowBytes(columns)
        bytes.withUnsafeMutableBytes { dst in
            let base = dst.baseAddress!
            Parallel.chunks(rows, minChunk: type.blockSize > 1 ? 4 : 256) { range in
                for r in range { type.quantize(t.data + r * columns, count: columns, into: base + r * rowBytes) }
            }
        }
        return bytes
    }

    /// llama.cpp's q/k row order: GGUF row rowSource[r] holds HF row r (the inverse of import-gguf's).
    static func permuted(_ w: Tensor, heads: Int) -> Tensor {
        let rows = w.shape[0], cols = w.count / rows
        let out = Tensor(uninitialized: w.shape)
        for (hf, gguf) in GGUFImport.hfRowSource(rows: rows, heads: heads).enumerated() {
            (out.data + gguf * cols).update(from: w.data + hf * cols, count: cols)
        }
        return out
    }

    /// The llama.cpp architecture a model is written as (docs/CONVENTIONS.md §22): Qwen3 as `qwen3` and Phi-3 as
    /// `phi3` (HF row order); Llama, Mistral and Qwen2 as `llama`, q/k rows permuted for its RoPE (Qwen2's biases are
    /// optional tensors there).
    static func architecture(of config: LlamaConfig) -> String {
        config.isGemma3 ? "gemma3" : config.queryKeyNorms ? "qwen3" : config.fusedProjections ? "phi3" : "llama"
    }

    /// What llama.cpp can run: linear, YaRN and llama3 scaling (and plain RoPE with any base), longrope on Phi-3 —
    /// other kinds would load and then produce garbage past the original window.
    static func requireExportable(_ config: LlamaConfig, source: String) throws {
        if config.isGemma3 { try requireGemma3Exportable(config, source: source) }
        guard let s = config.ropeScaling else { return }
        switch s.kind {
        case .default, .linear, .yarn, .llama3, .ntkAlpha: return
        case .longrope where config.fusedProjections: return
        case .dynamic:
            throw LongTuneError("\(source): rope_scaling dynamic (dynamic NTK) has no llama.cpp equivalent: "
                                + "the GGUF would run without scaling past the original window; "
                                + "train with yarn or linear to export")
        case .longrope:
            throw LongTuneError("\(source): rope_scaling longrope is only run by llama.cpp for Phi-3 models, not "
                                + "Llama; train with yarn or linear to export")
        }
    }
}

extension GGUFExport {
    /// What llama.cpp's `gemma3` runs as transformers does (docs/CONVENTIONS.md §22): linear scaling of the global
    /// layers (as Gemma-3-4B+ ship) and the attention scale it derives from the shape.
    static func requireGemma3Exportable(_ c: LlamaConfig, source: String) throws {
        if let s = c.ropeScaling, s.kind != .linear {
            throw LongTuneError("\(source): rope_scaling \(s.kind.rawValue) on Gemma 3 is not exported "
                                + "(llama.cpp's gemma3 is checked with linear scaling of the global layers, "
                                + "as Gemma 3's own long models ship); train with linear to export")
        }
        let derived = GGUFImport.llamaCppQueryPreAttnScalar(c)
        if let s = c.queryPreAttnScalar, s != derived {
            throw LongTuneError("\(source): query_pre_attn_scalar \(s) differs from the \(derived) llama.cpp derives "
                                + "from the shape (src/models/gemma3.cpp), so the GGUF would attend with another scale")
        }
    }

    /// `gemma3.*` keys beyond the common ones: the window, the local layers where they are not llama.cpp's default
    /// (every 6th layer global) and their base where it is not 10⁴.
    static func gemma3Metadata(_ c: LlamaConfig) -> [(String, GGUFValue)] {
        guard let w = c.slidingWindow, let types = c.layerTypes else { return [] }
        var m: [(String, GGUFValue)] = [("gemma3.attention.sliding_window", .u32(UInt32(w)))]
        if types != LlamaConfig.layerTypes(layers: types.count, globalEvery: LlamaConfig.defaultGlobalEvery) {
            m.append(("gemma3.attention.sliding_window_pattern", .bools(types.map { $0 == .sliding })))
        }
        if let base = c.localRopeTheta, base != LlamaConfig.defaultLocalRopeTheta {
            m.append(("gemma3.rope.freq_base_swa", .f32(Float(base))))
        }
        return m
    }
}

/// llama-quantize's choice of type per tensor for a whole-file type (llama.cpp's `llama_tensor_get_type`, without an
/// importance matrix, for Llama-architecture models): norms stay F32; the output matrix (or the tied embedding)
/// gets Q6_K; Q4_K_M and Q5_K_M give attn_v and ffn_down Q6_K in the first and last eighth of the layers and every
/// third between; a row length the chosen type's block does not divide falls back to a 32-block type.
struct QuantizationMix {
    let type: GGUFExport.FileType
    let layers: Int
    let tiedOutput: Bool
    var attentionV = 0
    var ffnDown = 0

    init(type: GGUFExport.FileType, layers: Int, tiedOutput: Bool) {
        self.type = type; self.layers = layers; self.tiedOutput = tiedOutput
    }

    mutating func type(_ name: String, shape: [Int]) -> GGMLType {
        if shape.count < 2 || name.hasSuffix("_norm.weight") { return .f32 }
        let columns = shape[shape.count - 1]
        if type.isConverterType {   // convert_hf_to_gguf.py: Q8_0 needs whole blocks, else F16
            return columns % type.defaultType.blockSize == 0 ? type.defaultType : .f16
        }
        return Self.fallback(chosen(name, columns: columns), columns: columns)
    }

    /// The per-tensor rule before the block-size fallback.
    mutating func chosen(_ name: String, columns: Int) -> GGMLType {
        let base = type.defaultType
        if name == "output.weight" || (tiedOutput && name == "token_embd.weight") {
            return columns % base.blockSize != 0 ? .q8_0 : (base == .q8_0 ? .q8_0 : .q6_K)
        }
        let mixed = type == .q4_k_m || type == .q5_k_m
        if name.hasSuffix("attn_v.weight") {
            defer { attentionV += 1 }
            return mixed && moreBits(attentionV) ? .q6_K : base
        }
        if name.hasSuffix("ffn_down.weight") {
            defer { ffnDown += 1 }
            return mixed && moreBits(ffnDown) ? .q6_K : base
        }
        return base
    }

    /// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third layer between.
    func moreBits(_ i: Int) -> Bool { i < layers / 8 || i >= 7 * layers / 8 || (i - layers / 8) % 3 == 2 }

    /// llama.cpp's `tensor_type_fallback`: a 256-block type on rows it does not divide becomes a 32-block one,
    /// and F16 when even that does not divide.
    static func fallback(_ t: GGMLType, columns: Int) -> GGMLType {
        guard columns % t.blockSize != 0 else { return t }
        let smaller: GGMLType = switch t {
        case .q4_K: .q5_0
        case .q5_K: .q5_1
        case .q6_K: .q8_0
        default: t
        }
        return columns % smaller.blockSize == 0 ? smaller : .f16
    }
}

/// What an export reads: a model directory, or a checkpoint merged with its base (W + scale·B·A in fp32, trained
/// extras replacing theirs, config.json as `merge` writes it: trained RoPE scaling, trained context).
struct ExportSource {
    let url: URL
    let config: LlamaConfig
    let tensor: (String) throws -> Tensor
    /// Where the tokenizer metadata comes from: a Hugging Face directory, or the base GGUF file's own keys.
    let tokenizer: Either
    let checkpoint: Checkpoint.Loaded?
    let tokenizerPre: String?
    enum Either { case directory(URL), gguf(GGUFFile) }

    init(_ url: URL, base: String?, fromQuantized: Bool = false, tokenizerPre: String? = nil) throws {
        self.url = url
        self.tokenizerPre = tokenizerPre
        let fm = FileManager.default
        if fm.fileExists(atPath: url.appendingPathComponent("state.json").path) {
            let ck = try Checkpoint.read(url)
            try ck.requireFiniteTensors()
            let recipe = ck.state.recipe, basePath = base ?? recipe.model.path
            let weights = try Merge.BaseWeights(basePath, recipe: recipe, dequantizing:
                try Merge.quantizedBase(fromQuantized, recipe: recipe, checkpoint: url))
            try ck.requireBase(weights.config, at: basePath)
            let merged = Merge.MergedTensors(checkpoint: ck, base: weights)
            config = Merge.mergedConfig(weights.config, trainedContext: recipe.model.context_length, dtype: .fp32)
            tensor = merged.tensor
            checkpoint = ck
            if ModelSource.isGGUF(basePath) {
                tokenizer = .gguf(try GGUFFile(URL(fileURLWithPath: basePath)))
            } else if basePath.hasPrefix("builtin:") {
                throw LongTuneError("\(url.path): its base \(basePath) has no tokenizer, and a GGUF file needs one; "
                                    + "export a run on a real model (or pass --base DIR with its tokenizer files)")
            } else {
                tokenizer = .directory(URL(fileURLWithPath: basePath))
            }
        } else if fm.fileExists(atPath: url.appendingPathComponent("config.json").path) {
            guard !fromQuantized else {
                throw LongTuneError("\(url.path): --from-quantized applies to a QLoRA checkpoint, "
                                    + "and this is a model directory")
            }
            let dir = try ModelDirectory(url)
            config = dir.config
            tensor = { name in
                guard let t = try dir.tensor(name) else { throw LongTuneError("\(url.path): missing tensor \(name)") }
                return t
            }
            tokenizer = .directory(url)
            checkpoint = nil
        } else {
            throw LongTuneError("\(url.path): neither a model directory (config.json) nor a checkpoint (state.json); "
                                + "give a merged model or a run's checkpoint such as checkpoints/RUN/latest")
        }
    }

    /// `tokenizer.*` keys: built from the directory's files, or copied from the base GGUF.
    func tokenizerMetadata() throws -> [(String, GGUFValue)] {
        switch tokenizer {
        case .directory(let dir):
            return try GGUFVocabulary.metadata(dir, vocabSize: config.vocabSize, pre: tokenizerPre)
        case .gguf(let file):
            return file.metadata.keys.sorted().filter { $0.hasPrefix("tokenizer.") }.compactMap { key in
                GGUFVocabulary.value(file.metadata[key]!, key: key).map { (key, $0) }
            }
        }
    }
}

extension GGUFExport {
    /// The file's metadata: general.*, the `ARCH.*` hyperparameters and RoPE scaling as llama.cpp reads them
    /// (context length = the trained context), and the tokenizer.
    static func metadata(_ model: ExportSource, type: FileType) throws -> [(String, GGUFValue)] {
        let c = model.config
        var m: [(String, GGUFValue)] = [
            ("general.architecture", .string(architecture(of: c))), ("general.type", .string("model")),
            ("general.name", .string(model.url.standardizedFileURL.lastPathComponent)),
        ]
        if let ck = model.checkpoint {
            let r = ck.state.recipe
            m.append(("general.description", .string("fine-tuned by LongTune to \(r.model.context_length) tokens "
                                                      + "(step \(ck.state.step), LoRA r=\(r.adapter.rank))")))
            m.append(("general.base_model.count", .u32(1)))
            m.append(("general.base_model.0.name", .string(URL(fileURLWithPath: r.model.path).lastPathComponent)))
        }
        let a = architecture(of: c)
        m += [
            (a + ".block_count", .u32(UInt32(c.numHiddenLayers))),
            (a + ".context_length", .u32(UInt32(c.maxPositionEmbeddings))),
            (a + ".embedding_length", .u32(UInt32(c.hiddenSize))),
            (a + ".feed_forward_length", .u32(UInt32(c.intermediateSize))),
            (a + ".attention.head_count", .u32(UInt32(c.numAttentionHeads))),
            (a + ".attention.head_count_kv", .u32(UInt32(c.numKeyValueHeads))),
        ]
        m += ropeScalingMetadata(c)
        m += [
            (a + ".rope.freq_base", .f32(Float(c.ropeTheta))),
            (a + ".attention.layer_norm_rms_epsilon", .f32(Float(c.rmsNormEps))),
            (a + ".attention.key_length", .u32(UInt32(c.headDim))),
            (a + ".attention.value_length", .u32(UInt32(c.headDim))),
            ("general.file_type", .u32(type.fileTypeNumber)), (a + ".vocab_size", .u32(UInt32(c.vocabSize))),
            (a + ".rope.dimension_count", .u32(UInt32(c.rotaryDim))),
        ]
        if a == "gemma3" { m += gemma3Metadata(c) }
        if a == "phi3" {   // 0: no window (the converter's convention; llama.cpp runs Phi-3 without one either way)
            m.append((a + ".attention.sliding_window", .u32(UInt32(c.slidingWindow ?? 0))))
        }
        m += try model.tokenizerMetadata()
        m.append(("general.quantization_version", .u32(2)))
        return m
    }

    /// `ARCH.rope.scaling.*` (linear: type and factor; YaRN: also the original context and any explicit
    /// attention factor and betas; longrope: the original context and its attention factor). llama3's and longrope's
    /// factors travel as tensors instead.
    static func ropeScalingMetadata(_ c: LlamaConfig) -> [(String, GGUFValue)] {
        let a = architecture(of: c)
        guard let s = c.ropeScaling else { return [] }
        let original = UInt32(s.originalMaxPositionEmbeddings ?? c.maxPositionEmbeddings)
        if s.kind == .longrope {   // the factors travel as tensors (ropeTensors)
            let f = RopeFrequencies(scaling: s, theta: c.ropeTheta, rotaryDim: c.rotaryDim,
                                    maxPositionEmbeddings: c.maxPositionEmbeddings, sequenceLength: 1)
            return [(a + ".rope.scaling.original_context_length", .u32(original)),
                    (a + ".rope.scaling.attn_factor", .f32(Float(f.attentionFactor)))]
        }
        guard let factor = s.factor else { return [] }
        switch s.kind {
        case .linear:
            return [(a + ".rope.scaling.type", .string("linear")), (a + ".rope.scaling.factor", .f32(Float(factor)))]
        case .yarn:
            var m: [(String, GGUFValue)] = [
                (a + ".rope.scaling.type", .string("yarn")), (a + ".rope.scaling.factor", .f32(Float(factor))),
                (a + ".rope.scaling.original_context_length", .u32(original)),
            ]
            if let v = s.attentionFactor { m.append((a + ".rope.scaling.yarn_attn_factor", .f32(Float(v)))) }
            if let b = s.betaFast { m.append((a + ".rope.scaling.yarn_beta_fast", .f32(Float(b)))) }
            if let b = s.betaSlow { m.append((a + ".rope.scaling.yarn_beta_slow", .f32(Float(b)))) }
            return m
        default: return []
        }
    }
}
