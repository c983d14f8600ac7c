import Engine
import Foundation

/// Writes a safetensors file one tensor at a time: the header is fixed from names and shapes up
/// front, then each tensor's bytes are appended as it is produced, so memory stays near the
/// largest tensor. Written under a temporary name, fsynced and renamed by `finish`.
public final class SafetensorsStreamWriter {
    let url: URL
    let tmp: URL
    let handle: FileHandle
    let order: [(String, [Int])]
    let dtype: DType
    var next = 0

    public init(url: URL, tensors: [(String, [Int])], dtype: DType,
                metadata: [String: String] = ["format": "pt"]) throws {
        self.url = url; self.order = tensors; self.dtype = dtype
        var header: [String: Any] = [:]
        var offset = 0
        for (name, shape) in tensors {
            let bytes = shape.reduce(1, *) * dtype.byteSize
            header[name] = ["dtype": dtype.safetensorsName, "shape": shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw EngineError("\(url.deletingLastPathComponent().path): cannot create files here")
        }
        handle = try FileHandle(forWritingTo: tmp)
        var prefix = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(json)
        try handle.write(contentsOf: prefix)
    }

    /// Appends the next tensor (in the order given to init), converted to the file's dtype.
    public func write(_ name: String, _ t: Tensor) throws {
        guard next < order.count, order[next].0 == name, order[next].1 == t.shape else {
            throw EngineError("\(url.path): tensor \(name) \(t.shape) written out of order")
        }
        next += 1
        if dtype == .fp32 {
            try handle.write(contentsOf: Data(bytes: t.data, count: t.count * 4))
        } else {
            var bits = [UInt16](repeating: 0, count: t.count)
            encodeHalf(t.data, &bits, count: t.count, dtype: dtype)
            try bits.withUnsafeBytes { try handle.write(contentsOf: Data($0)) }
        }
    }

    public func finish() throws {
        guard next == order.count else {
            throw EngineError("\(url.path): \(order.count - next) tensors were not written")
        }
        try handle.synchronize()
        try handle.close()
        guard rename(tmp.path, url.path) == 0 else {
            throw EngineError("\(url.path): rename failed: \(String(cString: strerror(errno)))")
        }
    }

    public func abandon() {
        try? handle.close()
        try? FileManager.default.removeItem(at: tmp)
    }
}
