import Engine
import Foundation

/// Writes a safetensors file one tensor at a time: the header is fixed from names and shapes up
/// front, then each tensor's bytes are appended as it is produced, so memory stays near the
/// largest tensor. Written under a temporary name, fsynced and renamed by `finish`.
public final class SafetensorsStreamWriter {
    /// One tensor of the file: its name, safetensors dtype (F32, F16, BF16, U8, …), shape and size.
    public struct Entry {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        public let bytes: Int
        public init(name: String, dtype: String, shape: [Int], bytes: Int) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }
    }

    let url: URL
    let file: StagedFile
    let order: [Entry]
    var next = 0

    /// Every tensor in `dtype`.
    public convenience init(url: URL, tensors: [(String, [Int])], dtype: DType,
                            metadata: [String: String] = ["format": "pt"]) throws {
        try self.init(url: url, entries: tensors.map {
            Entry(name: $0.0, dtype: dtype.safetensorsName, shape: $0.1, bytes: $0.1.reduce(1, *) * dtype.byteSize)
        }, metadata: metadata)
    }

    public init(url: URL, entries: [Entry], metadata: [String: String] = ["format": "pt"]) throws {
        self.url = url; self.order = entries
        var header: [String: Any] = [:]
        var offset = 0
        for e in entries {
            header[e.name] = ["dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]]
            offset += e.bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        file = try StagedFile(url)
        var prefix = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(json)
        try file.write(prefix)
    }

    /// Appends the next tensor (in the order given to init), converted to its entry's dtype (F32, F16 or BF16).
    public func write(_ name: String, _ t: Tensor) throws {
        guard next < order.count, order[next].name == name, order[next].shape == t.shape,
              let dtype = DType(safetensorsName: order[next].dtype) else {
            throw LongTuneError("\(url.path): tensor \(name) \(t.shape) written out of order")
        }
        next += 1
        if dtype == .fp32 {
            try file.write(Data(bytes: t.data, count: t.count * 4))
        } else {
            var bits = [UInt16](repeating: 0, count: t.count)
            encodeHalf(t.data, &bits, count: t.count, dtype: dtype)
            try bits.withUnsafeBytes { try file.write(Data($0)) }
        }
    }

    /// Appends the next tensor's bytes as they are (any dtype).
    public func write(_ name: String, raw: [UInt8]) throws {
        guard next < order.count, order[next].name == name, order[next].bytes == raw.count else {
            throw LongTuneError("\(url.path): tensor \(name) (\(raw.count) bytes) written out of order")
        }
        next += 1
        try file.write(Data(raw))
    }

    public func finish() throws {
        guard next == order.count else {
            throw LongTuneError("\(url.path): \(order.count - next) tensors were not written")
        }
        try file.commit()
    }

    public func abandon() { file.abandon() }
}
