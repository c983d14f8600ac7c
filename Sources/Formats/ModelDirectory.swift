import Engine
import Foundation
import Llama

/// A Hugging Face model directory: config.json plus model.safetensors, or shards listed in
/// model.safetensors.index.json.
public struct ModelDirectory {
    public let url: URL
    public let config: LlamaConfig
    private let files: [String: SafetensorsFile]   // tensor name -> file holding it

    public init(_ url: URL) throws {
        self.url = url
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), isDir.boolValue else {
            throw LongTuneError("\(url.path): no such model directory (expected config.json and *.safetensors inside)")
        }
        config = try LlamaConfig.load(url.appendingPathComponent("config.json"))
        let index = url.appendingPathComponent("model.safetensors.index.json")
        var files: [String: SafetensorsFile] = [:]
        if FileManager.default.fileExists(atPath: index.path) {
            let json = try? JSONSerialization.jsonObject(with: Data(contentsOf: index)) as? [String: Any]
            guard let map = json?["weight_map"] as? [String: String] else {
                throw LongTuneError("\(index.path): needs a \"weight_map\" object {tensor name: shard file}")
            }
            var shards: [String: SafetensorsFile] = [:]
            for (name, shard) in map {
                if shards[shard] == nil { shards[shard] = try SafetensorsFile(url.appendingPathComponent(shard)) }
                guard shards[shard]!.entries[name] != nil else {
                    throw LongTuneError(
                        "\(index.path): weight_map puts \"\(name)\" in \(shard), which does not contain it")
                }
                files[name] = shards[shard]
            }
        } else {
            let single = url.appendingPathComponent("model.safetensors")
            guard FileManager.default.fileExists(atPath: single.path) else {
                throw LongTuneError("\(url.path): no model.safetensors or model.safetensors.index.json")
            }
            let f = try SafetensorsFile(single)
            for name in f.names { files[name] = f }
        }
        self.files = files
    }

    public var tensorNames: [String] { files.keys.sorted() }

    public func tensor(_ name: String) throws -> Tensor? {
        try files[name]?.tensor(name)
    }

    /// A tensor's header entry (dtype, shape), nil when no file has it.
    public func entry(_ name: String) -> SafetensorsFile.Entry? { files[name]?.entries[name] }

    /// The dtype a tensor is stored in, nil when no file has it or it is not F32/F16/BF16.
    public func dtype(of name: String) -> DType? {
        entry(name).flatMap { DType(safetensorsName: $0.dtype) }
    }

    /// A tensor's raw bytes, nil when no file has it.
    public func rawBytes(_ name: String) throws -> [UInt8]? { try files[name]?.rawBytes(name) }

    /// Where the tensor is stored (for messages).
    public func file(of name: String) -> String { files[name]?.url.path ?? url.path }
}

extension LlamaForCausalLM {
    /// A [vocab, hidden] table kept in 16 bits when it is stored so (a QLoRA base's embedding, docs/CONVENTIONS.md
    /// §14), or in bf16 for bf16 compute (§15, rounded from fp32 or fp16 as it is read); nil otherwise.
    static func sixteenBit(_ name: String, in directory: ModelDirectory, config: LlamaConfig,
                           compute: ComputeDType) throws -> HalfMatrix? {
        guard let entry = directory.entry(name), entry.shape == [config.vocabSize, config.hiddenSize],
              let dtype = directory.dtype(of: name) else { return nil }
        if dtype == .bf16 || (dtype == .fp16 && compute == .fp32), let raw = try directory.rawBytes(name) {
            let bits = raw.withUnsafeBytes { p in
                (0..<(raw.count / 2)).map {
                    UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))
                }
            }
            return HalfMatrix(shape: entry.shape, dtype: dtype, bits: bits)
        }
        guard compute == .bf16, let t = try directory.tensor(name) else { return nil }
        return HalfMatrix(t, dtype: .bf16)
    }

    /// Loads a model directory's weights (fp32 in memory) under their HF names; with `quantization` the
    /// decoder's projections are quantized one tensor at a time as they are read, so the full-precision
    /// model never sits in memory. Projections a bitsandbytes 4-bit checkpoint stores in NF4 are kept as
    /// stored with a quantization, and dequantized to fp32 without. Without a quantization, bf16 `compute` stores
    /// the projections in bf16 one tensor at a time as they are read (docs/CONVENTIONS.md §15).
    public convenience init(directory: ModelDirectory, ropeOverride: RopeScaling? = nil,
                            quantization: Quantization? = nil, compute: ComputeDType = .fp32) throws {
        let config = directory.config.withRopeScaling(ropeOverride)
        try config.validate(source: directory.url.appendingPathComponent("config.json").path)
        self.init(config: config)
        var missing: [String] = []  // names the config implies but the files lack
        func read(_ name: String, shape: [Int]) throws -> Tensor? {
            guard let t = try directory.tensor(name) else { missing.append(name); return nil }
            guard t.shape == shape else {
                throw LongTuneError("\(directory.url.path): tensor \"\(name)\" has shape \(t.shape), "
                                    + "config.json implies \(shape)")
            }
            return t
        }
        var loaded = Set<String>()
        for lin in quantizableLinears {
            let name = lin.path + ".weight", shape = [lin.outFeatures, lin.inFeatures]
            if let stored = try BitsandbytesNF4.read(name, shape: shape, from: directory) {
                if quantization != nil { lin.quantized = stored } else { lin.weight.value = stored.dequantized() }
                loaded.insert(name)
            } else if let quantization, let t = try read(name, shape: shape) {
                lin.quantized = try quantization.quantize(t, name: "\(directory.url.path): \(name)")
            } else if compute == .bf16, let t = try read(name, shape: shape) {
                lin.quantized = HalfMatrix(t, dtype: .bf16)
            }
        }
        let embedding = model.embed_tokens.path + ".weight", head = lm_head.path + ".weight"
        if quantization != nil || compute == .bf16,
           let table = try LlamaForCausalLM.sixteenBit(embedding, in: directory, config: config, compute: compute) {
            model.embed_tokens.frozen16 = table
            loaded.insert(embedding)
        }
        if compute == .bf16, !config.tieWordEmbeddings,
           let table = try LlamaForCausalLM.sixteenBit(head, in: directory, config: config, compute: compute) {
            lm_head.quantized = table
            loaded.insert(head)
        }
        for (name, p) in namedParameters() where !loaded.contains(name) {   // the quantized weights are not here
            if let t = try read(name, shape: p.shape) { p.value = t }
        }
        // The zero-filled tensors the loaded ones replaced went to the buffer cache, where nothing of
        // their shapes would reuse them: give their memory back.
        BufferCache.drain()
        guard missing.isEmpty else {
            throw LongTuneError("\(directory.url.path): missing tensors \(missing.prefix(5).joined(separator: ", "))"
                                + "\(missing.count > 5 ? " and \(missing.count - 5) more" : "")")
        }
    }
}
