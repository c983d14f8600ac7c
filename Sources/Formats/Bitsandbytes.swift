import Engine
import Foundation

/// Hugging Face checkpoints of bitsandbytes 4-bit models (docs/CONVENTIONS.md §14). A quantized projection
/// `P.weight` is stored as its packed NF4 codes (U8 [⌈n/2⌉, 1]) beside `P.weight.absmax`, `P.weight.quant_map`
/// (the 16 codes), under double quantization `P.weight.nested_absmax` and `P.weight.nested_quant_map`, and
/// `P.weight.quant_state.bitsandbytes__nf4`: the remaining fields as JSON bytes.
public enum BitsandbytesNF4 {
    public static let stateSuffix = ".quant_state.bitsandbytes__nf4"

    /// The NF4 weight stored under `name` with the dense shape `shape`, or nil when it is stored unquantized.
    public static func read(_ name: String, shape: [Int], from dir: ModelDirectory) throws -> NF4Matrix? {
        let file = dir.file(of: name)
        func fail(_ what: String) -> LongTuneError {
            LongTuneError("\(file): tensor \"\(name)\": \(what); the bitsandbytes quant state is corrupt or truncated "
                          + "(quantize the full-precision model again, e.g. with `longtune quantize`)")
        }
        guard let stateBytes = try dir.rawBytes(name + stateSuffix) else {
            if dir.entry(name + ".quant_state.bitsandbytes__fp4") != nil {
                throw LongTuneError("\(file): tensor \"\(name)\" is bitsandbytes FP4; LongTune reads NF4 only "
                                    + "(quantize the full-precision model with model.quantization: nf4)")
            }
            return nil
        }
        guard let state = try? JSONSerialization.jsonObject(with: Data(stateBytes)) as? [String: Any] else {
            throw fail("\(stateSuffix.dropFirst()) is not a JSON object")
        }
        guard state["quant_type"] as? String == "nf4" else {
            throw fail("quant_type \(state["quant_type"] ?? "missing") is not nf4")
        }
        guard let blockSize = state["blocksize"] as? Int, NF4Matrix.validBlockSizes.contains(blockSize) else {
            throw fail("blocksize \(state["blocksize"] ?? "missing") is not one of \(NF4Matrix.validBlockSizes)")
        }
        guard let dtype = (state["dtype"] as? String).flatMap(DType.init(torchName:)) else {
            throw fail("dtype \(state["dtype"] ?? "missing") is not float32, float16 or bfloat16")
        }
        guard state["shape"] as? [Int] == shape else {
            throw fail("quant state shape \(state["shape"] ?? "missing") differs from the config's \(shape)")
        }
        let n = shape.reduce(1, *), blocks = (n + blockSize - 1) / blockSize
        let packed = try bytes(name, "U8", count: (n + 1) / 2, dir, fail)
        guard try floats(name + ".quant_map", count: 16, dir, fail) == NF4Matrix.codeBook else {
            throw fail("quant_map is not the NF4 code book")
        }
        guard dir.entry(name + ".nested_absmax") != nil else {
            let absmax = try floats(name + ".absmax", count: blocks, dir, fail)
            return NF4Matrix(shape: shape, blockSize: blockSize, packed: packed, scales: .plain(absmax), dtype: dtype)
        }
        let nestedBlock = DoubleQuantizedScales.nestedBlockSize
        guard state["nested_blocksize"] as? Int == nestedBlock, state["nested_dtype"] as? String == "float32" else {
            throw fail("nested_blocksize \(state["nested_blocksize"] ?? "missing") / nested_dtype "
                       + "\(state["nested_dtype"] ?? "missing") are not 256 / float32")
        }
        guard let offset = (state["nested_offset"] as? NSNumber)?.floatValue, offset.isFinite else {
            throw fail("nested_offset is missing or not a finite number")
        }
        let scales = DoubleQuantizedScales(
            codes: try bytes(name + ".absmax", "U8", count: blocks, dir, fail),
            nestedAbsmax: try floats(name + ".nested_absmax", count: (blocks + nestedBlock - 1) / nestedBlock,
                                     dir, fail),
            offset: offset, map: try floats(name + ".nested_quant_map", count: 256, dir, fail))
        return NF4Matrix(shape: shape, blockSize: blockSize, packed: packed, scales: .double(scales), dtype: dtype)
    }

    private static func bytes(_ name: String, _ dtype: String, count: Int, _ dir: ModelDirectory,
                              _ fail: (String) -> LongTuneError) throws -> [UInt8] {
        guard let e = dir.entry(name), e.dtype == dtype, e.shape.reduce(1, *) == count,
              let b = try dir.rawBytes(name) else {
            throw fail("\(name) should be \(dtype) with \(count) elements, found "
                       + (dir.entry(name).map { "\($0.dtype) \($0.shape)" } ?? "nothing"))
        }
        return b
    }

    private static func floats(_ name: String, count: Int, _ dir: ModelDirectory,
                               _ fail: (String) -> LongTuneError) throws -> [Float] {
        _ = try bytes(name, "F32", count: count, dir, fail)   // checks the dtype and the size
        guard let values = try dir.tensor(name)?.array, values.allSatisfy(\.isFinite) else {
            throw fail("\(name) holds NaN or infinity")
        }
        return values
    }

    /// The tensors of one quantized weight as bitsandbytes saves them: entries and their bytes.
    public static func tensors(_ name: String, _ m: NF4Matrix) -> [(SafetensorsStreamWriter.Entry, [UInt8])] {
        func entry(_ suffix: String, _ dtype: String, _ shape: [Int],
                   _ bytes: [UInt8]) -> (SafetensorsStreamWriter.Entry, [UInt8]) {
            (.init(name: name + suffix, dtype: dtype, shape: shape, bytes: bytes.count), bytes)
        }
        func f32(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        var state = "{\"quant_type\": \"nf4\", \"blocksize\": \(m.blockSize), \"dtype\": \"\(m.dtype.torchName)\", "
            + "\"shape\": [\(m.shape.map(String.init).joined(separator: ", "))]"
        var out = [entry("", "U8", [m.packed.count, 1], m.packed)]
        switch m.scales {
        case .plain(let absmax):
            out.append(entry(".absmax", "F32", [absmax.count], f32(absmax)))
        case .double(let d):
            out.append(entry(".absmax", "U8", [d.codes.count], d.codes))
            out.append(entry(".nested_absmax", "F32", [d.nestedAbsmax.count], f32(d.nestedAbsmax)))
            out.append(entry(".nested_quant_map", "F32", [d.map.count], f32(d.map)))
            state += ", \"nested_blocksize\": \(DoubleQuantizedScales.nestedBlockSize), \"nested_dtype\": \"float32\", "
                + "\"nested_offset\": \(Double(d.offset))"
        }
        out.append(entry(".quant_map", "F32", [16], f32(NF4Matrix.codeBook)))
        out.append(entry(stateSuffix, "U8", [Array((state + "}").utf8).count], Array((state + "}").utf8)))
        return out
    }

    /// config.json's `quantization_config` as transformers writes it for a 4-bit NF4 model.
    public static func quantizationConfig(doubleQuant: Bool, computeDtype: DType) -> [String: Any] {
        ["quant_method": "bitsandbytes", "load_in_4bit": true, "load_in_8bit": false, "_load_in_4bit": true,
         "_load_in_8bit": false, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": doubleQuant,
         "bnb_4bit_compute_dtype": computeDtype.torchName, "bnb_4bit_quant_storage": "uint8",
         "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
         "llm_int8_skip_modules": NSNull(), "llm_int8_threshold": 6.0]
    }
}
