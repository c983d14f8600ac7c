import Engine
import Foundation

/// A llama.cpp GGUF file (version 2 or 3): metadata key/values, tensor infos and tensor data,
/// memory-mapped. Tensors of type F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q2_K…Q6_K
/// dequantize to fp32 (docs/CONVENTIONS.md §9).
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
        public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
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
    /// Each key's GGUF value type (4 = u32, 6 = f32, 8 = string, 9 = array, …) and, for arrays, the element type.
    public let metadataTypes: [String: (type: UInt32, element: UInt32?)]
    public let tensors: [String: TensorInfo]
    public let tensorOrder: [String]
    private let data: Data
    private let dataStart: Int

    /// (block elements, block bytes) per supported ggml type.
    public static let layouts: [UInt32: (name: String, block: Int, bytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2),
        2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210),
    ]
    static let supportedNames = layouts.sorted { $0.key < $1.key }.map(\.value.name).joined(separator: ", ")

    /// Whether a ggml type is a block quantization (Q4_0 … Q6_K) rather than F32/F16/BF16.
    public static func isBlockQuantized(_ type: UInt32) -> Bool { (layouts[type]?.block ?? 1) > 1 }

    /// Bytes a tensor takes in the file; nil for an unsupported type.
    public static func storedBytes(_ info: TensorInfo) -> Int? {
        layouts[info.type].map { info.count / $0.block * $0.bytes }
    }

    public init(_ url: URL) throws {
        self.url = url
        let path = url.path
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw LongTuneError("\(path): cannot read (\(error.localizedDescription))")
        }
        var r = Reader(data: data, path: path)
        guard try r.u32() == 0x4655_4747 else { throw LongTuneError("\(path): not a GGUF file (bad magic)") }
        let version = try r.u32()
        guard version == 2 || version == 3 else {
            throw LongTuneError("\(path): GGUF version \(version) is not supported (2 and 3 are)")
        }
        let nTensors = try r.count("tensor count", limit: 1_000_000)
        let nKV = try r.count("metadata count", limit: 1_000_000)
        var meta: [String: Value] = [:], types: [String: (type: UInt32, element: UInt32?)] = [:]
        for _ in 0..<nKV {
            let key = try r.string()
            let type = try r.u32()
            types[key] = (type, type == 9 ? try r.peekU32() : nil)
            meta[key] = try r.value(type: type)
        }
        var infos: [String: TensorInfo] = [:], order: [String] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = Int(try r.u32())
            guard nd >= 1, nd <= 4 else { throw LongTuneError("\(path): tensor \"\(name)\" has \(nd) dimensions") }
            let dims = try (0..<nd).map { _ in try r.count("tensor \"\(name)\" dimension", limit: 1 << 40) }
            let type = try r.u32(), off = try r.count("tensor \"\(name)\" offset", limit: UInt64(data.count))
            guard checkedProduct(dims) != nil else {
                throw LongTuneError("\(path): tensor \"\(name)\": dims \(dims) overflow")
            }
            infos[name] = TensorInfo(name: name, dims: dims, type: type, offset: off)
            order.append(name)
        }
        let alignment = meta["general.alignment"].map { $0.int ?? 0 } ?? 32
        guard (1...65536).contains(alignment) else {
            throw LongTuneError("\(path): general.alignment is \(meta["general.alignment"]!), not a byte count in "
                                + "1...65536 (corrupt file)")
        }
        dataStart = (r.pos + alignment - 1) / alignment * alignment
        for name in order {
            let t = infos[name]!
            guard let layout = Self.layouts[t.type] else { continue }   // reported when read
            guard t.dims[0] % layout.block == 0 else {
                throw LongTuneError("\(path): tensor \"\(name)\": row of \(t.dims[0]) is not a multiple of "
                                    + "\(layout.name)'s block of \(layout.block)")
            }
            let (bytes, overflow) = (t.count / layout.block).multipliedReportingOverflow(by: layout.bytes)
            guard !overflow, bytes <= data.count, dataStart + t.offset + bytes <= data.count else {
                throw LongTuneError("\(path): tensor \"\(name)\" (\(bytes) bytes at \(t.offset)) runs past "
                                    + "the end of the file (truncated download?)")
            }
        }
        metadata = meta; metadataTypes = types; tensors = infos; tensorOrder = order
    }

    /// Runs `body` on the tensor's stored bytes (memory-mapped; valid only inside `body`).
    public func withStoredBytes<R>(_ info: TensorInfo, _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        try data.withUnsafeBytes { raw in try body(raw.baseAddress! + dataStart + info.offset) }
    }

    /// The tensor dequantized to fp32 in HF shape.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = tensors[name] else { throw LongTuneError("\(url.path): no tensor \"\(name)\"") }
        guard let layout = Self.layouts[info.type] else {
            throw LongTuneError("\(url.path): tensor \"\(name)\" has ggml type \(info.type), not supported "
                                + "(\(Self.supportedNames) are); re-quantize with llama.cpp")
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
    public static func dequantize(type: UInt32, _ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
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
        case 6, 7:   // Q5_0: d, qh, 16 bytes, value (q−16)·d; Q5_1: d, m, qh, 16 bytes, value q·d + m
            let d = f16(0), m: Float = type == 7 ? f16(2) : 0, at = type == 7 ? 4 : 2
            let qh = p.loadUnaligned(fromByteOffset: at, as: UInt32.self)
            for i in 0..<32 {
                let low = (p.load(fromByteOffset: at + 4 + i % 16, as: UInt8.self) >> (i < 16 ? 0 : 4)) & 0x0F
                let q = Int(low) | Int((qh >> UInt32(i)) & 1) << 4
                y[i] = type == 7 ? Float(q) * d + m : Float(q - 16) * d
            }
        case 10: dequantizeQ2K(p, y)
        case 11: dequantizeQ3K(p, y)
        case 12, 13: dequantizeQ45K(p, y, fifthBit: type == 13)
        case 14: dequantizeQ6K(p, y)
        default: preconditionFailure("unsupported ggml type \(type)")
        }
    }

    // K-quants: super-blocks of 256 elements in sub-blocks of 16 or 32 (docs/CONVENTIONS.md §9). Element p's
    // low bits come from byte 32·(p / 128) + p % 32 (shifted by 2·((p % 128) / 32)) for 2-bit fields and from
    // byte 32·(p / 64) + p % 32 (shifted by 4·((p % 64) / 32)) for 4-bit ones.

    /// Q2_K: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit q, d, dmin:
    /// value d·sc·q − dmin·m per sub-block of 16.
    static func dequantizeQ2K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = floatFromFP16(p.loadUnaligned(fromByteOffset: 80, as: UInt16.self))
        let dmin = floatFromFP16(p.loadUnaligned(fromByteOffset: 82, as: UInt16.self))
        for e in 0..<256 {
            let sc = p.load(fromByteOffset: e / 16, as: UInt8.self)
            let q = (p.load(fromByteOffset: 16 + 32 * (e / 128) + e % 32, as: UInt8.self) >> (2 * ((e % 128) / 32))) & 3
            y[e] = (d * Float(sc & 0x0F)) * Float(q) - dmin * Float(sc >> 4)
        }
    }

    /// Q3_K: a 32-byte high-bit mask, 64 bytes of 2-bit q, 12 bytes of 6-bit scales, d: value d·(s − 32)·q with
    /// q = low 2 bits − 4 unless the mask bit is set.
    static func dequantizeQ3K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = floatFromFP16(p.loadUnaligned(fromByteOffset: 108, as: UInt16.self))
        func byte(_ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
        for e in 0..<256 {
            let j = e / 16   // scale: low 4 bits from byte j % 8 (nibble j / 8), high 2 from byte 8 + j % 4
            let s = ((byte(96 + j % 8) >> (4 * UInt8(j / 8))) & 0x0F)
                | (((byte(104 + j % 4) >> (2 * UInt8(j / 4))) & 3) << 4)
            let low = (byte(32 + 32 * (e / 128) + e % 32) >> (2 * ((e % 128) / 32))) & 3
            let high = (byte(e % 32) >> UInt8(e / 32)) & 1
            y[e] = (d * Float(Int(s) - 32)) * Float(Int(low) - (high == 0 ? 4 : 0))
        }
    }

    /// Q4_K / Q5_K: d, dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, (Q5_K: 32 bytes of fifth
    /// bits), 128 bytes of 4-bit q: value d·sc·q − dmin·m.
    static func dequantizeQ45K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, fifthBit: Bool) {
        let d = floatFromFP16(p.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
        let dmin = floatFromFP16(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        func byte(_ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
        let qs = fifthBit ? 48 : 16
        for s in 0..<8 {
            let (sc, m) = s < 4 ? (byte(4 + s) & 63, byte(8 + s) & 63)
                : ((byte(12 + s - 4) & 0x0F) | ((byte(4 + s - 4) >> 2) & 0x30),
                   (byte(12 + s - 4) >> 4) | ((byte(8 + s - 4) >> 2) & 0x30))
            let scale = d * Float(sc), minimum = dmin * Float(m)
            for i in 0..<32 {
                var q = (byte(qs + 32 * (s / 2) + i) >> (4 * UInt8(s % 2))) & 0x0F
                if fifthBit { q |= ((byte(16 + i) >> UInt8(s)) & 1) << 4 }
                y[32 * s + i] = scale * Float(q) - minimum
            }
        }
    }

    /// Q6_K: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales, d: value d·sc·(q − 32).
    static func dequantizeQ6K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = floatFromFP16(p.loadUnaligned(fromByteOffset: 208, as: UInt16.self))
        func byte(_ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
        for e in 0..<256 {
            let (c, r) = (e / 128, e % 128)
            let low = (byte(64 * c + r % 64) >> (4 * UInt8(r / 64))) & 0x0F
            let high = (byte(128 + 32 * c + r % 32) >> (2 * UInt8(r / 32))) & 3
            let sc = Float(p.load(fromByteOffset: 192 + e / 16, as: Int8.self))
            y[e] = (d * sc) * Float(Int(low | high << 4) - 32)
        }
    }

    /// Little-endian cursor over the header with bounds checks.
    struct Reader {
        let data: Data
        let path: String
        var pos = 0
        mutating func bytes(_ n: Int) throws -> Data {
            guard n >= 0, pos + n <= data.count else {
                throw LongTuneError("\(path): truncated GGUF header (needs \(n) bytes at \(pos))")
            }
            defer { pos += n }
            return data.subdata(in: pos..<(pos + n))
        }
        mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
            let d = try bytes(MemoryLayout<T>.size)
            return T(littleEndian: d.withUnsafeBytes { $0.loadUnaligned(as: T.self) })
        }
        mutating func u32() throws -> UInt32 { try load(UInt32.self) }
        /// The next u32 without moving past it.
        mutating func peekU32() throws -> UInt32 {
            defer { pos -= 4 }
            return try u32()
        }
        mutating func u64() throws -> UInt64 { try load(UInt64.self) }
        /// A u64 count or size, at most `limit` (anything larger is a corrupt file, not an allocation to try).
        mutating func count(_ what: String, limit: UInt64) throws -> Int {
            let n = try u64()
            guard n <= limit else {
                throw LongTuneError("\(path): implausible \(what) \(n) at byte \(pos - 8) (corrupt file)")
            }
            return Int(n)
        }
        mutating func string() throws -> String {
            let n = try count("string length", limit: 1 << 30)
            return String(decoding: try bytes(n), as: UTF8.self)
        }
        /// A metadata value; arrays nest at most `depth` levels (a deeper one is a corrupt or hostile file).
        mutating func value(type: UInt32, depth: Int = 0) throws -> Value {
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
                guard depth < 8 else {
                    throw LongTuneError("\(path): metadata arrays nested deeper than 8 (corrupt file)")
                }
                var items: [Value] = []
                items.reserveCapacity(min(n, data.count - pos))   // every item takes at least one byte
                for _ in 0..<n { items.append(try value(type: t, depth: depth + 1)) }
                return .array(items)
            case 10: return .uint(try u64())
            case 11: return .int(try load(Int64.self))
            case 12: return .float(Double(bitPattern: try u64()))
            default: throw LongTuneError("\(path): unknown GGUF value type \(type) (corrupt file?)")
            }
        }
    }
}
