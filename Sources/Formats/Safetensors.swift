import Engine
import Foundation

/// A safetensors file (https://github.com/huggingface/safetensors): an 8-byte little-endian header
/// length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data. The file is
/// memory-mapped; tensors are converted to fp32 when read. Every inconsistency is an error naming
/// the file and the tensor.
public final class SafetensorsFile {
    public struct Entry: Sendable {
        public let dtype: String
        public let shape: [Int]
        public let begin: Int
        public let end: Int
    }

    public let url: URL
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    public static let elementSizes: [String: Int] = ["F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4,
                                                     "I16": 2, "I8": 1, "U8": 1, "BOOL": 1]

    public init(_ url: URL) throws {
        self.url = url
        let path = url.path
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw LongTuneError("\(path): cannot read (\(error.localizedDescription))")
        }
        guard data.count >= 8 else {
            throw LongTuneError("\(path): truncated safetensors file (\(data.count) bytes, no header)")
        }
        let stated = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard stated > 0, stated <= UInt64(data.count - 8) else {
            throw LongTuneError("\(path): header length \(stated) does not fit in a \(data.count)-byte file "
                                + "(truncated or not safetensors)")
        }
        let n = Int(stated)
        dataStart = 8 + n
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) } catch {
            throw LongTuneError("\(path): the header is not valid JSON (\(error.localizedDescription))")
        }
        guard let header = json as? [String: Any] else {
            throw LongTuneError("\(path): the header is not a JSON object")
        }
        let dataSize = data.count - dataStart
        var entries: [String: Entry] = [:], meta: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                meta = (value as? [String: String]) ?? [:]
                continue
            }
            guard let d = value as? [String: Any], let dtype = d["dtype"] as? String,
                  let shape = d["shape"] as? [Int], let offs = d["data_offsets"] as? [Int], offs.count == 2 else {
                throw LongTuneError("\(path): tensor \"\(name)\": entry needs dtype, shape and two data_offsets")
            }
            guard let size = Self.elementSizes[dtype] else {
                throw LongTuneError("\(path): tensor \"\(name)\": unknown dtype \(dtype)")
            }
            guard offs[0] >= 0, offs[0] <= offs[1], offs[1] <= dataSize else {
                throw LongTuneError("\(path): tensor \"\(name)\": data_offsets \(offs) outside the \(dataSize)-byte "
                                    + "data section (truncated file?)")
            }
            guard let bytes = checkedProduct(shape + [size]) else {
                throw LongTuneError("\(path): tensor \"\(name)\": shape \(shape) is negative or too large "
                                    + "(corrupt header)")
            }
            guard bytes == offs[1] - offs[0] else {
                throw LongTuneError("\(path): tensor \"\(name)\": shape \(shape) of \(dtype) needs \(bytes) bytes, "
                                    + "data_offsets give \(offs[1] - offs[0])")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: offs[0], end: offs[1])
        }
        let sorted = entries.sorted { $0.value.begin < $1.value.begin }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.value.begin < a.value.end {
            throw LongTuneError("\(path): tensors \"\(a.key)\" and \"\(b.key)\" overlap in the data section")
        }
        self.entries = entries
        self.metadata = meta
    }

    public var names: [String] { entries.keys.sorted() }

    /// The tensor as fp32 (from F32, F16 or BF16).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw LongTuneError("\(url.path): no tensor \"\(name)\"") }
        let t = Tensor(uninitialized: e.shape)
        let n = t.count
        try data.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + e.begin
            switch e.dtype {
            case "F32": memcpy(t.data, src, n * 4)
            case "F16", "BF16":
                let dtype: DType = e.dtype == "F16" ? .fp16 : .bf16
                if Int(bitPattern: src) % 2 == 0 {
                    decodeHalf(src.assumingMemoryBound(to: UInt16.self), t.data, count: n, dtype: dtype)
                } else {
                    let tmp = [UInt16](unsafeUninitializedCapacity: n) { b, c in
                        memcpy(b.baseAddress!, src, n * 2); c = n
                    }
                    decodeHalf(tmp, t.data, count: n, dtype: dtype)
                }
            default:
                throw LongTuneError("\(url.path): tensor \"\(name)\" has dtype \(e.dtype); "
                                    + "only F32, F16 and BF16 weights are supported")
            }
        }
        return t
    }

    /// A tensor's raw little-endian bytes, whatever its dtype (quantized codes, bitsandbytes' quant state).
    public func rawBytes(_ name: String) throws -> [UInt8] {
        guard let e = entries[name] else { throw LongTuneError("\(url.path): no tensor \"\(name)\"") }
        return data.withUnsafeBytes { raw in [UInt8](raw[(dataStart + e.begin)..<(dataStart + e.end)]) }
    }

    /// Writes tensors (converted to `dtype`) atomically: a temporary file, fsync, rename.
    public static func write(_ tensors: [(String, Tensor)], dtype: DType, metadata: [String: String] = ["format": "pt"],
                             to url: URL) throws {
        let w = try SafetensorsStreamWriter(url: url, tensors: tensors.map { ($0.0, $0.1.shape) }, dtype: dtype,
                                            metadata: metadata)
        do {
            for (name, t) in tensors { try w.write(name, t) }
            try w.finish()
        } catch { w.abandon(); throw error }
    }
}

/// Whole-file writes that never leave a partial file under the final name.
public enum AtomicFile {
    /// An Encodable value as indented JSON with sorted keys (files people read).
    public static func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try write(try enc.encode(value), to: url)
    }

    /// A JSON object (dictionaries, arrays, numbers, strings) as indented JSON with sorted keys.
    public static func writeJSON(object: Any, to url: URL) throws {
        try write(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), to: url)
    }

    public static func write(_ data: Data, to url: URL) throws {
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw LongTuneError("\(url.deletingLastPathComponent().path): cannot create files here "
                                + "(check the directory exists and is writable)")
        }
        do {
            let fh = try FileHandle(forWritingTo: tmp)
            try fh.write(contentsOf: data)
            try fh.synchronize()
            try fh.close()
            guard rename(tmp.path, url.path) == 0 else {
                throw LongTuneError("rename to \(url.path) failed: \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw LongTuneError("\(url.path): write failed (\(error)); the disk may be full")
        }
    }
}

/// A file written in pieces under a temporary name beside its final one, then fsynced and renamed into place by
/// `commit`, or removed by `abandon`: readers never see a partial file under the final name.
public final class StagedFile {
    public let url: URL
    let tmp: URL
    let handle: FileHandle

    public init(_ url: URL) throws {
        self.url = url
        tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw LongTuneError("\(url.deletingLastPathComponent().path): cannot create files here "
                                + "(check the directory exists and is writable)")
        }
        handle = try FileHandle(forWritingTo: tmp)
    }

    public func write(_ data: Data) throws { try handle.write(contentsOf: data) }

    public func commit() throws {
        try handle.synchronize()
        try handle.close()
        guard rename(tmp.path, url.path) == 0 else {
            throw LongTuneError("\(url.path): rename failed: \(String(cString: strerror(errno)))")
        }
    }

    public func abandon() {
        try? handle.close()
        try? FileManager.default.removeItem(at: tmp)
    }
}

/// A directory written as a whole: filled under a temporary name beside it, then renamed into
/// place (replacing an older one), so readers never see a half-written directory.
public enum AtomicDirectory {
    public static func write(_ url: URL, _ fill: (URL) throws -> Void) throws {
        let fm = FileManager.default
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        try? fm.removeItem(at: tmp)
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        } catch {
            throw LongTuneError("\(tmp.deletingLastPathComponent().path): cannot create a directory here "
                                + "(\((error as NSError).localizedFailureReason ?? "not writable")); "
                                + "choose another output path")
        }
        do {
            try fill(tmp)
            if fm.fileExists(atPath: url.path) { try fm.removeItem(at: url) }
            guard rename(tmp.path, url.path) == 0 else {
                throw LongTuneError("\(url.path): rename failed: \(String(cString: strerror(errno)))")
            }
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
    }
}

/// The product of non-negative sizes, or nil when it overflows (a hostile or corrupt header).
public func checkedProduct(_ sizes: [Int]) -> Int? {
    var p = 1
    for s in sizes {
        let (r, overflow) = p.multipliedReportingOverflow(by: s)
        if overflow || s < 0 { return nil }
        p = r
    }
    return p
}
