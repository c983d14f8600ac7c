import Engine
import Formats
import Foundation
import Llama

/// `longtune quantize`: a model directory written as a Hugging Face bitsandbytes 4-bit checkpoint
/// (docs/CONVENTIONS.md §14) that transformers + bitsandbytes load unchanged. The decoder's projections are
/// quantized to NF4 from their stored values, recording their stored dtype as bitsandbytes does; every
/// other tensor is copied as stored. Tensors are read one at a time, so memory stays near the NF4 model.
public enum QuantizedExport {
    public struct Report {
        public var quantized = 0
        public var copied = 0
        public var bytes = 0
    }

    public static func run(model: URL, out: URL, quantization: Quantization, force: Bool = false) throws -> Report {
        try OutputPath.check(out.path, option: "--out", kind: .directory(.model), force: force)
        let dir = try ModelDirectory(model)
        let structure = LlamaForCausalLM(config: dir.config)   // names and shapes only; nothing allocated
        let projections = Set(structure.quantizableLinears.map { $0.path + ".weight" })
        var report = Report()
        var entries: [SafetensorsStreamWriter.Entry] = []
        var quantizedBytes: [String: [UInt8]] = [:]   // every tensor of the quantized projections, by name
        for (name, shape) in structure.parameterShapes() {
            guard let stored = dir.entry(name) else { throw LongTuneError("\(model.path): missing tensor \(name)") }
            guard projections.contains(name) else {
                entries.append(.init(name: name, dtype: stored.dtype, shape: stored.shape,
                                     bytes: stored.end - stored.begin))
                report.copied += 1
                continue
            }
            guard dir.entry(name + BitsandbytesNF4.stateSuffix) == nil else {
                throw LongTuneError("\(dir.file(of: name)): \(name) is already quantized; "
                                    + "quantize the full-precision model")
            }
            guard let t = try dir.tensor(name), t.shape == shape else {
                throw LongTuneError("\(dir.file(of: name)): tensor \(name) has shape \(stored.shape), "
                                    + "config.json implies \(shape)")
            }
            let q = try quantization.quantize(t, name: "\(dir.file(of: name)): \(name)")
            let dtype = dir.dtype(of: name) ?? .fp32
            let nf4 = NF4Matrix(shape: q.shape, blockSize: q.blockSize, packed: q.packed, scales: q.scales,
                                dtype: dtype)
            for (entry, bytes) in BitsandbytesNF4.tensors(name, nf4) {
                entries.append(entry)
                quantizedBytes[entry.name] = bytes
            }
            report.quantized += 1
        }
        report.bytes = entries.reduce(0) { $0 + $1.bytes }
        try AtomicDirectory.write(out) { tmp in
            let writer = try SafetensorsStreamWriter(url: tmp.appendingPathComponent("model.safetensors"),
                                                     entries: entries)
            do {
                for e in entries {
                    guard let bytes = try quantizedBytes[e.name] ?? dir.rawBytes(e.name) else {
                        throw LongTuneError("\(model.path): tensor \(e.name) vanished while writing")
                    }
                    try writer.write(e.name, raw: bytes)
                }
                try writer.finish()
            } catch { writer.abandon(); throw error }
            try AtomicFile.write(try quantizedConfigJSON(dir, doubleQuant: quantization.doubleQuant),
                                 to: tmp.appendingPathComponent("config.json"))
            try Merge.copyTokenizerFiles(from: model, to: tmp)
        }
        return report
    }

    /// config.json as bytes. JSONSerialization writes 6.0 as 6, and transformers' BitsAndBytesConfig refuses an
    /// integer `llm_int8_threshold` ("must be a float"), so that one value is written with its fraction.
    static func quantizedConfigJSON(_ dir: ModelDirectory, doubleQuant: Bool) throws -> Data {
        let object = try quantizedConfig(dir, doubleQuant: doubleQuant)
        let json = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        let text = String(decoding: json, as: UTF8.self)
        guard let range = text.range(of: #""llm_int8_threshold" *: *6(?=[,\s}])"#, options: .regularExpression) else {
            throw LongTuneError("internal: quantization_config lacks llm_int8_threshold")
        }
        return Data(text.replacingCharacters(in: range, with: "\"llm_int8_threshold\" : 6.0").utf8)
    }

    /// The base's config.json with transformers' `quantization_config`; compute in the model's own dtype.
    static func quantizedConfig(_ dir: ModelDirectory, doubleQuant: Bool) throws -> [String: Any] {
        let url = dir.url.appendingPathComponent("config.json")
        guard var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
            throw LongTuneError("\(url.path): not a JSON object")
        }
        let dtypeName = (config["dtype"] ?? config["torch_dtype"]) as? String
        let compute = dtypeName.flatMap(DType.init(torchName:)) ?? .fp32
        config["quantization_config"] = BitsandbytesNF4.quantizationConfig(doubleQuant: doubleQuant,
                                                                            computeDtype: compute)
        return config
    }
}
