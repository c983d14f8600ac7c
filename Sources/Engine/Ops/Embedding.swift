/// Token embedding lookup; backward scatter-adds rows into the table's gradient.

extension Graph {
    /// ids [T] (each < V), table [V, C] -> [T, C].
    public func embedding(_ ids: [Int32], table: Variable) -> Variable {
        return Profile.time(.rowwise) {
            let (v, c) = (table.shape[0], table.shape[1])
            Self.checkIDs(ids, vocabulary: v)
            let y = Tensor(uninitialized: [ids.count, c])
            Parallel.chunks(ids.count, minChunk: 64) { rows in
                for r in rows { (y.data + r * c).update(from: table.value.data + Int(ids[r]) * c, count: c) }
            }
            return output(y, [table]) { out in
                let dy = out.grad!.data, g = table.gradBuffer().data
                // Columns split across threads: repeated ids never race.
                Parallel.chunks(c, minChunk: 16) { cols in
                    for (r, id) in ids.enumerated() {
                        let src = dy + r * c, dst = g + Int(id) * c
                        for j in cols { dst[j] += src[j] }
                    }
                }
            }
        }
    }

    /// Token ids index the table: the callers check ids against the vocabulary first (`checkTokens`).
    static func checkIDs(_ ids: [Int32], vocabulary v: Int) {
        for (i, id) in ids.enumerated() {
            precondition(id >= 0 && Int(id) < v,
                         "embedding: token id \(id) at position \(i) is outside the vocabulary 0..<\(v)")
        }
    }
}
