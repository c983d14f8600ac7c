import CHDF5
import Engine
import Foundation

/// Writes a packed token dataset (docs/CONVENTIONS.md §8): `input_ids` and `document_ids`, int32 [rows, seq_len],
/// plus file attributes. Rows are appended as they fill, so memory stays one row; the file is
/// written under a temporary name and renamed when complete.
public final class PackedWriter {
    let url: URL
    let tmp: URL
    let file: hid_t
    let ids: hid_t
    let docs: hid_t
    /// The `labels` dataset, when the rows carry them (SFT).
    let labels: hid_t?
    public let seqLen: Int
    public private(set) var rows = 0

    public init(url: URL, seqLen: Int, withLabels: Bool = false) throws {
        H5Eset_auto2(hid_t(H5E_DEFAULT), nil, nil)
        self.url = url
        self.seqLen = seqLen
        tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        let f = H5Fcreate(tmp.path, lt_h5f_acc_trunc(), hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
        guard f >= 0 else {
            throw LongTuneError("\(url.path): cannot create the output file "
                                + "(does the directory exist and is it writable?)")
        }
        file = f
        func dataset(_ name: String) -> hid_t {
            var dims: [hsize_t] = [0, hsize_t(seqLen)],
                maxDims: [hsize_t] = [hsize_t.max, hsize_t(seqLen)]  // H5S_UNLIMITED
            let space = H5Screate_simple(2, &dims, &maxDims)
            let plist = H5Pcreate(lt_h5p_dataset_create())
            var chunk: [hsize_t] = [hsize_t(max(1, min(64, (1 << 20) / max(seqLen, 1)))), hsize_t(seqLen)]
            H5Pset_chunk(plist, 2, &chunk)
            H5Pset_deflate(plist, 1)
            let d = H5Dcreate2(f, name, lt_h5t_native_int32(), space, hid_t(H5P_DEFAULT), plist, hid_t(H5P_DEFAULT))
            H5Pclose(plist); H5Sclose(space)
            return d
        }
        ids = dataset("input_ids")
        docs = dataset("document_ids")
        labels = withLabels ? dataset("labels") : nil
        guard ids >= 0, docs >= 0, (labels ?? 0) >= 0 else {
            throw LongTuneError("\(url.path): cannot create datasets in the output file")
        }
    }

    /// Appends one row of `seqLen` tokens with their document ids (and labels, when the file has them).
    public func append(ids rowIds: [Int32], documents: [Int32], labels rowLabels: [Int32]? = nil) throws {
        precondition(rowIds.count == seqLen && documents.count == seqLen && (rowLabels == nil) == (labels == nil))
        var columns = [(ids, rowIds), (docs, documents)]
        if let labels, let rowLabels { columns.append((labels, rowLabels)) }
        for (d, values) in columns {
            var newDims: [hsize_t] = [hsize_t(rows + 1), hsize_t(seqLen)]
            H5Dset_extent(d, &newDims)
            let space = H5Dget_space(d)
            var start: [hsize_t] = [hsize_t(rows), 0], count: [hsize_t] = [1, hsize_t(seqLen)]
            H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nil, &count, nil)
            let mem = H5Screate_simple(2, &count, nil)
            let status = values.withUnsafeBytes {
                H5Dwrite(d, lt_h5t_native_int32(), mem, space, hid_t(H5P_DEFAULT), $0.baseAddress)
            }
            H5Sclose(mem); H5Sclose(space)
            guard status >= 0 else { throw LongTuneError("\(url.path): writing row \(rows) failed (disk full?)") }
        }
        rows += 1
    }

    /// Writes the attributes, closes, fsyncs and renames into place.
    public func finish(attributes: [String: String], integers: [String: Int]) throws {
        for (k, v) in integers {
            let space = H5Screate(H5S_SCALAR)
            let a = H5Acreate2(file, k, lt_h5t_native_int64(), space, hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
            var value = Int64(v)
            H5Awrite(a, lt_h5t_native_int64(), &value)
            H5Aclose(a); H5Sclose(space)
        }
        for (k, v) in attributes {
            let space = H5Screate(H5S_SCALAR)
            let type = H5Tcopy(lt_h5t_c_s1())
            H5Tset_size(type, max(1, v.utf8.count))
            let a = H5Acreate2(file, k, type, space, hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
            var bytes = Array(v.utf8)
            if bytes.isEmpty { bytes = [0] }
            H5Awrite(a, type, &bytes)
            H5Aclose(a); H5Tclose(type); H5Sclose(space)
        }
        H5Dclose(ids); H5Dclose(docs)
        if let labels { H5Dclose(labels) }
        guard H5Fclose(file) >= 0 else { throw LongTuneError("\(url.path): closing the HDF5 file failed (disk full?)") }
        let fd = open(tmp.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(tmp.path, url.path) == 0 else {
            throw LongTuneError("\(url.path): rename failed: \(String(cString: strerror(errno)))")
        }
    }

    /// Abandons the output (removes the temporary file).
    public func abandon() {
        H5Dclose(ids); H5Dclose(docs)
        if let labels { H5Dclose(labels) }
        H5Fclose(file)
        try? FileManager.default.removeItem(at: tmp)
    }
}

/// Packs documents into rows: each document's tokens followed by EOS, concatenated and cut into
/// rows of `seqLen`; `document_ids` number the documents so training can keep attention inside them.
public final class Packer {
    let writer: PackedWriter
    let eos: Int32
    var row: [Int32] = [], rowDocs: [Int32] = []
    public private(set) var documents = 0
    public private(set) var tokens = 0

    public init(writer: PackedWriter, eos: Int32) { self.writer = writer; self.eos = eos }

    public func add(document ids: [Int32]) throws {
        let doc = Int32(truncatingIfNeeded: documents)
        documents += 1
        for t in ids + [eos] {
            row.append(t); rowDocs.append(doc)
            tokens += 1
            if row.count == writer.seqLen {
                try writer.append(ids: row, documents: rowDocs)
                row.removeAll(keepingCapacity: true); rowDocs.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Tokens of the last, partial row (dropped).
    public var remainder: Int { row.count }

    /// Packs text files, each read whole: a `.jsonl` file holds one document per line (its "text" string), any other
    /// file is one document. `progress` gets the number of files done after each.
    public func add(files: [String], tokenizer: Tokenizer, progress: (Int) -> Void) throws {
        for (n, path) in files.enumerated() {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw LongTuneError("\(path): cannot read this input file")
            }
            let text = String(decoding: data, as: UTF8.self)
            if path.hasSuffix(".jsonl") {
                for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
                    guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                          let doc = obj["text"] as? String else {
                        throw LongTuneError("\(path): line \(i + 1) is not a JSON object with a \"text\" string")
                    }
                    try add(document: tokenizer.encode(doc))
                }
            } else {
                try add(document: tokenizer.encode(text))
            }
            progress(n + 1)
        }
        guard writer.rows > 0 else {
            throw LongTuneError("only \(tokens) tokens: not enough for one row of \(writer.seqLen); "
                                + "give more text or a smaller --seq-len")
        }
    }
}
