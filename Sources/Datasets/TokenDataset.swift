import CHDF5
import Engine
import Foundation

/// A packed token dataset in HDF5 (docs/CONVENTIONS.md §8), read by hyperslab: `input_ids` of shape
/// [sequences, length] or a 1-D token stream, any integer type; optional `labels` and
/// `document_ids`/`position_ids` of the same shape. Token ids are checked against the vocabulary
/// as they are read; an id out of range is an error naming the file, row and column.
public final class TokenDataset {
    public let url: URL
    public let shape: [Int]              // of input_ids as stored
    public let vocabSize: Int?
    private let file: hid_t
    private let ids: hid_t
    public let attributes: [String: String]

    public var totalTokens: Int { shape.reduce(1, *) }
    /// Row length for 2-D datasets, nil for a 1-D stream.
    public var rowLength: Int? { shape.count == 2 ? shape[1] : nil }

    public init(_ url: URL, vocabSize: Int? = nil) throws {
        self.url = url
        self.vocabSize = vocabSize
        H5Eset_auto2(hid_t(H5E_DEFAULT), nil, nil)   // errors come back as return codes, not stderr dumps
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw LongTuneError(
                "\(url.path): no such dataset file (make one with `longtune pack` or h5py: dataset \"input_ids\")")
        }
        let attributes = try Self.probe(url)
        let f = H5Fopen(url.path, lt_h5f_acc_rdonly(), hid_t(H5P_DEFAULT))
        guard f >= 0 else {
            throw LongTuneError("\(url.path): not a readable HDF5 file (truncated or another format?)")
        }
        guard H5Lexists(f, "input_ids", hid_t(H5P_DEFAULT)) > 0 else {
            H5Fclose(f)
            throw LongTuneError("\(url.path): no dataset \"input_ids\" (shape [sequences, length] or a 1-D token "
                                + "stream)")
        }
        let d = H5Dopen2(f, "input_ids", hid_t(H5P_DEFAULT))
        let type = H5Dget_type(d)
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_INTEGER else {
            H5Dclose(d); H5Fclose(f)
            throw LongTuneError("\(url.path): \"input_ids\" must hold integers")
        }
        let space = H5Dget_space(d)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        guard rank == 1 || rank == 2 else {
            H5Dclose(d); H5Fclose(f)
            throw LongTuneError(
                "\(url.path): \"input_ids\" has rank \(rank); expected [sequences, length] or a 1-D stream")
        }
        var dims = [hsize_t](repeating: 0, count: rank)
        H5Sget_simple_extent_dims(space, &dims, nil)
        guard dims.allSatisfy({ $0 > 0 }) else {
            H5Dclose(d); H5Fclose(f)
            throw LongTuneError("\(url.path): \"input_ids\" has shape \(dims) with nothing in it; pack some text first")
        }
        // A corrupt header can claim any extent: the element count must be a number this machine can address.
        let limit: hsize_t = 1 << 48
        let (count, overflow) = dims.reduce((hsize_t(1), false)) { acc, n in
            let (p, o) = acc.0.multipliedReportingOverflow(by: n)
            return (p, acc.1 || o)
        }
        guard !overflow, count <= limit else {
            H5Dclose(d); H5Fclose(f)
            throw LongTuneError("\(url.path): \"input_ids\" claims shape \(dims), more tokens than a file can hold; "
                                + "the file is corrupt: pack it again")
        }
        // HDF5 1.10 reads a compact dataset whose stored buffer is shorter than its shape past the buffer's
        // end (newer versions refuse it at open): check the size first.
        let plist = H5Dget_create_plist(d)
        let layout = H5Pget_layout(plist)
        H5Pclose(plist)
        let stored = H5Dget_storage_size(d)
        if layout == H5D_COMPACT, stored != count * hsize_t(H5Tget_size(type)) {
            H5Dclose(d); H5Fclose(f)
            throw LongTuneError("\(url.path): \"input_ids\" (compact) stores \(stored) bytes for shape \(dims); "
                                + "the file is corrupt: pack it again")
        }
        file = f; ids = d
        shape = dims.map { Int($0) }
        self.attributes = attributes
    }

    deinit { H5Dclose(ids); H5Fclose(file) }

    /// `count` tokens of the flattened stream (rows joined in order) starting at `offset`.
    public func tokens(offset: Int, count: Int) throws -> [Int32] {
        guard offset >= 0, count >= 0, offset + count <= totalTokens else {
            throw LongTuneError("\(url.path): tokens \(offset)..<\(offset + count) past the end (\(totalTokens) "
                                + "tokens)")
        }
        if count == 0 { return [] }
        // Only the requested tokens are read: a row can be long (a [1, N] file is one stream).
        var out: [Int32] = []
        out.reserveCapacity(count)
        if let rowLen = rowLength {
            var at = offset
            while at < offset + count {
                let (r, c) = (at / rowLen, at % rowLen)
                let n = min(rowLen - c, offset + count - at)
                out += try read(ids, name: "input_ids", start: [hsize_t(r), hsize_t(c)], count: [1, hsize_t(n)])
                at += n
            }
        } else {
            out = try read(ids, name: "input_ids", start: [hsize_t(offset)], count: [hsize_t(count)])
        }
        if let v = vocabSize {
            for (i, id) in out.enumerated() where id < 0 || Int(id) >= v {
                let flat = offset + i
                let place = rowLength.map { "row \(flat / $0), column \(flat % $0)" } ?? "position \(flat)"
                throw LongTuneError("\(url.path): input_ids \(place) is \(id), outside the model's vocabulary 0..<\(v) "
                                    + "(was the data packed with another tokenizer?)")
            }
        }
        return out
    }

    /// One row of a 2-D dataset.
    public func row(_ r: Int) throws -> [Int32] {
        guard let len = rowLength else { throw LongTuneError("\(url.path): \"input_ids\" is a 1-D stream, not rows") }
        guard r >= 0, r < shape[0] else { throw LongTuneError("\(url.path): row \(r) of \(shape[0])") }
        return try tokens(offset: r * len, count: len)
    }

    /// Where row `r`'s packed documents start (docs/CONVENTIONS.md §8): wherever `document_ids` changes, else wherever
    /// `position_ids` is 0; nil when the file has neither.
    public func documentStarts(_ r: Int) throws -> [Int]? {
        if let docs = try optionalRow("document_ids", r) {
            return [0] + (1..<docs.count).filter { docs[$0] != docs[$0 - 1] }
        }
        if let pos = try optionalRow("position_ids", r) { return [0] + (1..<pos.count).filter { pos[$0] == 0 } }
        return nil
    }

    /// Whether the rows carry `labels` (SFT data: only the labelled tokens are targets).
    public var hasLabels: Bool { rowLength != nil && H5Lexists(file, "labels", hid_t(H5P_DEFAULT)) > 0 }

    /// An optional same-shaped integer dataset (`labels`, `document_ids`, `position_ids`) for a row.
    /// Labels are checked as ids are: −100 (ignored) or inside the vocabulary.
    public func optionalRow(_ name: String, _ r: Int) throws -> [Int32]? {
        guard H5Lexists(file, name, hid_t(H5P_DEFAULT)) > 0, let len = rowLength else { return nil }
        let d = H5Dopen2(file, name, hid_t(H5P_DEFAULT))
        guard d >= 0 else { throw LongTuneError("\(url.path): cannot open dataset \"\(name)\"") }
        defer { H5Dclose(d) }
        let space = H5Dget_space(d)
        var dims = [hsize_t](repeating: 0, count: 2)
        let rank = H5Sget_simple_extent_ndims(space)
        if rank == 2 { H5Sget_simple_extent_dims(space, &dims, nil) }
        H5Sclose(space)
        guard rank == 2, dims.map({ Int($0) }) == shape else {
            throw LongTuneError("\(url.path): \"\(name)\" must have input_ids' shape \(shape)")
        }
        let row = try read(d, name: name, start: [hsize_t(r), 0], count: [1, hsize_t(len)])
        if name == "labels", let v = vocabSize,
           let bad = row.firstIndex(where: { $0 != -100 && ($0 < 0 || Int($0) >= v) }) {
            throw LongTuneError("\(url.path): labels row \(r), column \(bad) is \(row[bad]): labels are token ids "
                                + "0..<\(v) or -100 (ignored)")
        }
        return row
    }

    private func read(_ d: hid_t, name: String, start: [hsize_t], count: [hsize_t]) throws -> [Int32] {
        let space = H5Dget_space(d)
        defer { H5Sclose(space) }
        var st = start, cn = count
        guard H5Sselect_hyperslab(space, H5S_SELECT_SET, &st, nil, &cn, nil) >= 0 else {
            throw LongTuneError("\(url.path): cannot select \(start)+\(count) in \"\(name)\"")
        }
        let n = count.reduce(1, *)
        let mem = H5Screate_simple(Int32(count.count), &cn, nil)
        defer { H5Sclose(mem) }
        var out = [Int32](repeating: 0, count: Int(n))
        let status = out.withUnsafeMutableBytes {
            H5Dread(d, lt_h5t_native_int32(), mem, space, hid_t(H5P_DEFAULT), $0.baseAddress)
        }
        guard status >= 0 else {
            throw LongTuneError("\(url.path): reading \"\(name)\" failed (truncated or corrupt file?)")
        }
        return out
    }

    /// The root attributes LongTune reads, as text.
    static let attributeNames = ["format", "version", "seq_len", "vocab_size", "eos_token_id", "tokenizer"]
    /// The datasets a packed file may hold.
    static let datasetNames = ["input_ids", "labels", "document_ids", "position_ids"]

    /// HDF5 1.10 can crash or hang inside its own code on a corrupt file (a variable-length attribute, a symbol
    /// table), before returning an error. So a forked child first opens the file, its datasets and attributes
    /// (`lt_probe_file_isolated` in Sources/CHDF5/shim.h); this process goes on only when that survived, and
    /// takes the attributes from the child's output.
    private static func probe(_ url: URL) throws -> [String: String] {
        let cNames = attributeNames.map { strdup($0) }, cSets = datasetNames.map { strdup($0) }
        defer { (cNames + cSets).forEach { free($0) } }
        var text: UnsafeMutablePointer<CChar>?
        var signal: Int32 = 0
        let status = cSets.map { UnsafePointer($0) }.withUnsafeBufferPointer { sets in
            cNames.map { UnsafePointer($0) }.withUnsafeBufferPointer { names in
                lt_probe_file_isolated(url.path, sets.baseAddress, Int32(sets.count),
                                       names.baseAddress, Int32(names.count), 10_000, &text, &signal)
            }
        }
        let what = "its datasets and attributes (\((datasetNames + attributeNames).joined(separator: ", ")))"
        switch status {
        case 0: break
        case -3: throw LongTuneError("\(url.path): reading \(what) did not finish in 10 s: the file is corrupt; "
                                     + "pack it again")
        case -2: throw LongTuneError("\(url.path): \(what) are corrupt (the HDF5 library crashed reading them"
                                     + "\(signal > 0 ? ", signal \(signal)" : "")); pack it again")
        default: throw LongTuneError("\(url.path): could not start a process to check the file")
        }
        defer { free(text) }
        var out: [String: String] = [:]
        for line in String(cString: text!).split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 { out[String(parts[0])] = String(parts[1]) }
        }
        return out
    }
}
