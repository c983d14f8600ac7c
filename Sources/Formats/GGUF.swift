import Engine
import Foundation

/// A llama.cpp GGUF file (version 2 or 3): metadata key/values, tensor infos and tensor data,
/// memory-mapped. Tensors of type F32, F16, BF16, Q8_0, Q4_0 and Q4_1 dequantize to fp32 (docs/CONVENTIONS.md §9).
public final class GGUFFile {
    public indirect enum Value {
        case int(Int64), uint(UInt64), float(Double), bool(Bool), string(String), array([Value])
        public var int: Int? {
            switch self {
            case .int(let v): Int(exactly: v)
            case .uint(let v): Int(exactly: v)
            case .float(let v): v.isFinite && abs(v) < 0x1p62 ? Int(v) : nil
            default: nil
            }
        }
        public var double: Double? {
            switch self {
            case .int(let v): Double(v)
            case .uint(let v): Double(v)
            case .float(let v): v
            default: nil
            }
        }
        public var string: String? { if case .string(let s) = self { s } else { nil } }
        public var array: [Value]? { if case .array(let a) = self { a } else { nil } }
    }

    public struct TensorInfo {
        public let name: String
        public let dims: [Int]          // innermost first, as stored
        public let type: UInt32
        public let offset: Int
        /// The PyTorch/HF shape: dims reversed.
        public var shape: [Int] { dims.reversed() }
        public var count: Int { dims.reduce(1, *) }
    }

    public let url: URL
    public let metadata: [String: Value]
    public let tensors: [String: TensorInfo]
    public let tensorOrder: [String]
    private let data: Data
    private let dataStart: Int

    /// (block elements, block bytes) per supported ggml type.
    static let layouts: [UInt32: (name: String, block: Int, bytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),
        2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 8: ("Q8_0", 32, 34),
    ]

    public init(_ url: URL) throws {
        self.url = url
        let path = url.path
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw EngineError("\(path): cannot read (\(error.localizedDescription))")
        }
        var r = Reader(data: data, path: path)
        guard try r.u32() == 0x4655_4747 else { throw EngineError("\(path): not a GGUF file (bad magic)") }
        let version = try r.u32()
        guard version == 2 || version == 3 else {
            throw EngineError("\(path): GGUF version \(version) is not supported (2 and 3 are)")
        }
        let nTensors = try r.count("tensor count", limit: 1_000_000), nKV = try r.count("metadata count", limit: 1_000_000)
        var meta: [String: Value] = [:]
        for _ in 0..<nKV {
            let key = try r.string()
            meta[key] = try r.value(type: try r.u32())
        }
        var infos: [String: TensorInfo] = [:], order: [String] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = Int(try r.u32())
            guard nd >= 1, nd <= 4 else { throw EngineError("\(path): tensor \"\(name)\" has \(nd) dimensions") }
            let dims = try (0..<nd).map { _ in try r.count("tensor \"\(name)\" dimension", limit: 1 << 40) }
            let type = try r.u32(), off = try r.count("tensor \"\(name)\" offset", limit: UInt64(data.count))
            guard checkedProduct(dims) != nil else { throw EngineError("\(path): tensor \"\(name)\": dims \(dims) overflow") }
            infos[name] = TensorInfo(name: name, dims: dims, type: type, offset: off)
            order.append(name)
        }
        let alignment = meta["general.alignment"].map { $0.int ?? 0 } ?? 32
        guard (1...65536).contains(alignment) else {
            throw EngineError("\(path): general.alignment is \(meta["general.alignment"]!), not a byte count in "
                              + "1...65536 (corrupt file)")
        }
        dataStart = (r.pos + alignment - 1) / alignment * alignment
        for name in order {
            let t = infos[name]!
            guard let layout = Self.layouts[t.type] else { continue }   // reported when read
            guard t.dims[0] % layout.block == 0 else {
                throw EngineError("\(path): tensor \"\(name)\": row of \(t.dims[0]) is not a multiple of "
                                  + "\(layout.name)'s block of \(layout.block)")
            }
            let bytes = t.count / layout.block * layout.bytes
            guard bytes <= data.count, dataStart + t.offset + bytes <= data.count else {
                throw EngineError("\(path): tensor \"\(name)\" (\(bytes) bytes at \(t.offset)) runs past "
                                  + "the end of the file (truncated download?)")
            }
        }
        metadata = meta; tensors = infos; tensorOrder = order
    }

    /// The tensor dequantized to fp32 in HF shape.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw EngineError("\(url.path): no tensor \"\(name)\"") }
        guard let layout = Self.layouts[info.type] else {
            throw EngineError("\(url.path): tensor \"\(name)\" has ggml type \(info.type), not supported "
                              + "(F32, F16, BF16, Q8_0, Q4_0, Q4_1 are); re-quantize with llama.cpp")
        }
        let out = Tensor(uninitialized: info.shape)
        data.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + info.offset
            let blocks = info.count / layout.block
            Parallel.chunks(blocks, minChunk: 1024) { range in
                for b in range { Self.dequantize(type: info.type, src + b * layout.bytes, out.data + b * layout.block) }
            }
        }
        return out
    }

    @inline(__always)
    static func dequantize(type: UInt32, _ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        func f16(_ o: Int) -> Float { floatFromFP16(p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        switch type {
        case 0: y[0] = p.loadUnaligned(as: Float.self)
        case 1: y[0] = f16(0)
        case 30: y[0] = floatFromBF16(p.loadUnaligned(as: UInt16.self))
        case 8:   // Q8_0: d, 32 × int8
            let d = f16(0)
            for i in 0..<32 { y[i] = d * Float(p.load(fromByteOffset: 2 + i, as: Int8.self)) }
        case 2:   // Q4_0: d, 16 bytes; low nibbles are elements 0–15, high nibbles 16–31; value (q−8)·d
            let d = f16(0)
            for i in 0..<16 {
                let q = p.load(fromByteOffset: 2 + i, as: UInt8.self)
                y[i] = Float(Int(q & 0x0F) - 8) * d
                y[i + 16] = Float(Int(q >> 4) - 8) * d
            }
        case 3:   // Q4_1: d, m, 16 bytes; value q·d + m
            let d = f16(0), m = f16(2)
            for i in 0..<16 {
                let q = p.load(fromByteOffset: 4 + i, as: UInt8.self)
                y[i] = Float(q & 0x0F) * d + m
                y[i + 16] = Float(q >> 4) * d + m
            }
        default: preconditionFailure("unsupported ggml type \(type)")
        }
    }

    /// Little-endian cursor over the header with bounds checks.
    struct Reader {
        let data: Data
        let path: String
        var pos = 0
        mutating func bytes(_ n: Int) throws -> Data {
            guard n >= 0, pos + n <= data.count else {
                throw EngineError("\(path): truncated GGUF header (needs \(n) bytes at \(pos))")
            }
            defer { pos += n }
            return data.subdata(in: pos..<(pos + n))
        }
        mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let d = try bytes(MemoryLayout<T>.size)
            return T(littleEndian: d.withUnsafeBytes { $0.loadUnaligned(as: T.self) })
        }
        mutating func u32() throws -> UInt32 { try load(UInt32.self) }
        mutating func u64() throws -> UInt64 { try load(UInt64.self) }
        /// A u64 count or size, at most `limit` (anything larger is a corrupt file, not an allocation to try).
        mutating func count(_ what: String, limit: UInt64) throws -> Int {
            let n = try u64()
            guard n <= limit else { throw EngineError("\(path): implausible \(what) \(n) at byte \(pos - 8) (corrupt file)") }
            return Int(n)
        }
        mutating func string() throws -> String {
            let n = try count("string length", limit: 1 << 30)
            return String(decoding: try bytes(n), as: UTF8.self)
        }
        mutating func value(type: UInt32) throws -> Value {
            switch type {
            case 0: return .uint(UInt64(try load(UInt8.self)))
            case 1: return .int(Int64(try load(Int8.self)))
            case 2: return .uint(UInt64(try load(UInt16.self)))
            case 3: return .int(Int64(try load(Int16.self)))
            case 4: return .uint(UInt64(try u32()))
            case 5: return .int(Int64(try load(Int32.self)))
            case 6: return .float(Double(Float(bitPattern: try u32())))
            case 7: return .bool(try load(UInt8.self) != 0)
            case 8: return .string(try string())
            case 9:
                let t = try u32(), n = try count("array length", limit: 1 << 28)
                var items: [Value] = []
                items.reserveCapacity(n)
                for _ in 0..<n { items.append(try value(type: t)) }
                return .array(items)
            case 10: return .uint(try u64())
            case 11: return .int(try load(Int64.self))
            case 12: return .float(Double(bitPattern: try u64()))
            default: throw EngineError("\(path): unknown GGUF value type \(type) (corrupt file?)")
            }
        }
    }
}
