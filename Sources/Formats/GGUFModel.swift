import Engine
import Foundation
import Llama

/// A frozen projection kept in its GGUF block type (Q4_0 … Q6_K; docs/CONVENTIONS.md §9, §14): the rows are
/// read from the memory-mapped file and dequantized on each use, q/k rows in HF order.
public final class GGUFBlockMatrix: QuantizedMatrix {
    let file: GGUFFile
    let info: GGUFFile.TensorInfo
    let layout: (name: String, block: Int, bytes: Int)
    /// HF row r is stored as GGUF row rowSource[r].
    let rowSource: [Int]
    public let shape: [Int]
    public var computeDType = ComputeDType.fp32

    init(file: GGUFFile, info: GGUFFile.TensorInfo, rowSource: [Int]) {
        self.file = file
        self.info = info
        layout = GGUFFile.layouts[info.type]!
        self.rowSource = rowSource
        shape = info.shape
    }

    public var kind: String { layout.name }
    public var storedBytes: Int { GGUFFile.storedBytes(info) ?? 0 }

    public func dequantize(into out: UnsafeMutablePointer<Float>) {
        let (rows, cols) = (shape[0], shape[1])
        let rowBytes = cols / layout.block * layout.bytes, type = info.type, layout = layout
        file.withStoredBytes(info) { src in
            Parallel.chunks(rows, minChunk: 16) { range in
                for r in range {
                    let row = src + rowSource[r] * rowBytes
                    for b in 0..<(cols / layout.block) {
                        GGUFFile.dequantize(type: type, row + b * layout.bytes, out + r * cols + b * layout.block)
                    }
                }
            }
        }
    }
}

extension LlamaForCausalLM {
    /// A model straight from a llama.cpp GGUF file, without an import: projections stored in a block type
    /// stay in it (frozen); with `quantization`, projections stored in F32/F16/BF16 are quantized to NF4;
    /// everything else is dequantized to fp32 (docs/CONVENTIONS.md §14).
    public convenience init(gguf: GGUFFile, ropeOverride: RopeScaling? = nil,
                            quantization: Quantization? = nil) throws {
        let config = try GGUFImport.config(from: gguf).withRopeScaling(ropeOverride)
        try config.validate(source: "\(gguf.url.path) (metadata)")
        self.init(config: config)
        let names = GGUFImport.hfNames(gguf)
        func source(_ hf: String) throws -> String {
            guard let name = names[hf] else { throw LongTuneError("\(gguf.url.path): missing tensor for \(hf)") }
            return name
        }
        var loaded = Set<String>()
        for lin in quantizableLinears {
            let hf = lin.path + ".weight", shape = [lin.outFeatures, lin.inFeatures]
            let name = try source(hf)
            guard let info = gguf.tensors[name], info.shape == shape else {
                throw LongTuneError("\(gguf.url.path): tensor \(name) has shape \(gguf.tensors[name]?.shape ?? []), "
                                    + "the metadata implies \(shape)")
            }
            if GGUFFile.isBlockQuantized(info.type) {
                let rows = GGUFImport.permutedHeads(name, config, architecture: GGUFImport.architecture(gguf))
                    .map { GGUFImport.hfRowSource(rows: shape[0], heads: $0) }
                lin.quantized = GGUFBlockMatrix(file: gguf, info: info, rowSource: rows ?? Array(0..<shape[0]))
                loaded.insert(hf)
            } else if let quantization {
                let t = try GGUFImport.hfTensor(gguf, name, shape: shape, config: config)
                lin.quantized = try quantization.quantize(t, name: "\(gguf.url.path): \(name)")
                loaded.insert(hf)
            }
        }
        for (hf, p) in namedParameters() where !loaded.contains(hf) {
            p.value = try GGUFImport.hfTensor(gguf, try source(hf), shape: p.shape, config: config)
        }
        BufferCache.drain()
    }
}
