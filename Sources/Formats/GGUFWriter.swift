import Engine
import Foundation

/// A metadata value as GGUF stores it, with its wire type (llama.cpp reads `llama.context_length` as a u32, the
/// RoPE base as an f32, …; the key owners in GGUFExport say which).
public enum GGUFValue: Equatable {
    case u32(UInt32), i32(Int32), u64(UInt64), f32(Float), bool(Bool), string(String)
    case strings([String]), i32s([Int32]), f32s([Float]), bools([Bool])
}

/// Writes a GGUF version 3 file one tensor at a time: the header (metadata, then every tensor's name, dims, type
/// and offset) is fixed up front, then each tensor's bytes are appended as they are produced, padded to the
/// 32-byte alignment, so memory stays near the largest tensor. Written under a temporary name beside the
/// final one, fsynced and renamed by `finish`; `abandon` removes it (docs/CONVENTIONS.md §20).
public final class GGUFWriter {
    public struct Tensor {
        public let name: String
        /// ggml order: the row length first (the PyTorch shape reversed).
        public let dims: [Int]
        public let type: GGMLType
        public init(name: String, shape: [Int], type: GGMLType) {
            self.name = name; dims = shape.reversed(); self.type = type
        }
        public var bytes: Int { type.rowBytes(dims[0]) * dims.dropFirst().reduce(1, *) }
    }

    public static let alignment = 32
    let url: URL
    let file: StagedFile
    let tensors: [Tensor]
    var next = 0

    public init(url: URL, metadata: [(String, GGUFValue)], tensors: [Tensor]) throws {
        self.url = url; self.tensors = tensors
        var header = Data()
        header.appendLE(UInt32(0x4655_4747)); header.appendLE(UInt32(3))
        header.appendLE(UInt64(tensors.count)); header.appendLE(UInt64(metadata.count))
        for (key, value) in metadata {
            header.appendGGUFString(key)
            header.appendGGUFValue(value)
        }
        var offset = 0
        for t in tensors {
            header.appendGGUFString(t.name)
            header.appendLE(UInt32(t.dims.count))
            for d in t.dims { header.appendLE(UInt64(d)) }
            header.appendLE(t.type.rawValue)
            header.appendLE(UInt64(offset))
            offset += Self.padded(t.bytes)
        }
        header.append(Data(count: Self.padded(header.count) - header.count))
        file = try StagedFile(url)
        try file.write(header)
    }

    static func padded(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    /// Appends the next tensor's stored bytes (in the order given to init).
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws {
        guard next < tensors.count, tensors[next].name == name, tensors[next].bytes == bytes.count else {
            throw LongTuneError("\(url.path): tensor \(name) (\(bytes.count) bytes) written out of order")
        }
        next += 1
        try file.write(Data(bytes))
        let pad = Self.padded(bytes.count) - bytes.count
        if pad > 0 { try file.write(Data(count: pad)) }
    }

    public func finish() throws {
        guard next == tensors.count else {
            throw LongTuneError("\(url.path): \(tensors.count - next) tensors were not written")
        }
        try file.commit()
    }

    public func abandon() { file.abandon() }
}

extension Data {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendGGUFString(_ s: String) {
        appendLE(UInt64(s.utf8.count))
        append(contentsOf: Array(s.utf8))
    }

    /// The value's GGUF type code, then the value (arrays: element type, count, elements).
    mutating func appendGGUFValue(_ v: GGUFValue) {
        switch v {
        case .u32(let x): appendLE(UInt32(4)); appendLE(x)
        case .i32(let x): appendLE(UInt32(5)); appendLE(x)
        case .f32(let x): appendLE(UInt32(6)); appendLE(x.bitPattern)
        case .bool(let x): appendLE(UInt32(7)); appendLE(UInt8(x ? 1 : 0))
        case .string(let x): appendLE(UInt32(8)); appendGGUFString(x)
        case .u64(let x): appendLE(UInt32(10)); appendLE(x)
        case .strings(let xs):
            appendLE(UInt32(9)); appendLE(UInt32(8)); appendLE(UInt64(xs.count))
            for x in xs { appendGGUFString(x) }
        case .i32s(let xs):
            appendLE(UInt32(9)); appendLE(UInt32(5)); appendLE(UInt64(xs.count))
            for x in xs { appendLE(x) }
        case .f32s(let xs):
            appendLE(UInt32(9)); appendLE(UInt32(6)); appendLE(UInt64(xs.count))
            for x in xs { appendLE(x.bitPattern) }
        case .bools(let xs):
            appendLE(UInt32(9)); appendLE(UInt32(7)); appendLE(UInt64(xs.count))
            for x in xs { appendLE(UInt8(x ? 1 : 0)) }
        }
    }
}
