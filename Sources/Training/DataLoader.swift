import Datasets
import Engine
import Foundation

/// One training sequence: tokens, optional labels, and where packed documents start.
public struct TrainingSequence {
    public let ids: [Int32]
    public let labels: [Int32]?
    public let documentStarts: [Int]?
}

/// Sequences of the recipe's context length from an HDF5 dataset (rows, or a 1-D stream cut into
/// windows) or a built-in synthetic source, shuffled per epoch from the seed (or in storage order).
/// The cursor (how many sequences have been handed out) is all a checkpoint needs to continue exactly.
public final class DataLoader {
    enum Source { case rows(TokenDataset), stream(TokenDataset), chain(next: [Int32]) }
    let source: Source
    public let count: Int
    public let length: Int
    /// Per-epoch shuffle seed; nil reads in storage order.
    let seed: UInt64?
    public private(set) var cursor = 0
    private var epochOrder: (epoch: Int, order: [Int])?

    public static let builtins = ["builtin:chain"]

    public init(_ spec: String, contextLength: Int, vocabSize: Int, shuffleSeed seed: UInt64?,
                key: String = "data.train") throws {
        length = contextLength
        self.seed = seed
        if spec == "builtin:chain" {
            // A Markov chain over the vocabulary: token t is followed by next[t] 9 times in 10,
            // otherwise by a random token. Learnable in a few steps, so the loss visibly falls.
            var rng = SplitMix64(seed: 0xC4A1)
            var next = (0..<vocabSize).map { Int32($0) }
            for i in stride(from: vocabSize - 1, to: 0, by: -1) { next.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            source = .chain(next: next)
            count = 4096
            return
        }
        if spec.hasPrefix("builtin:") {
            throw LongTuneError(
                "\(key): unknown built-in data \"\(spec)\"; built-ins: \(Self.builtins.joined(separator: ", "))")
        }
        let ds = try TokenDataset(URL(fileURLWithPath: spec), vocabSize: vocabSize)
        if let rowLen = ds.rowLength {
            guard rowLen == contextLength else {
                throw LongTuneError("\(spec): rows hold \(rowLen) tokens but model.context_length is \(contextLength); "
                                    + "repack with --seq-len \(contextLength) or set model.context_length: \(rowLen)")
            }
            source = .rows(ds); count = ds.shape[0]
        } else {
            guard ds.totalTokens >= contextLength else {
                throw LongTuneError("\(spec): \(ds.totalTokens) tokens, fewer than one sequence of \(contextLength)")
            }
            source = .stream(ds); count = ds.totalTokens / contextLength
        }
    }

    /// Moves to a checkpoint's position.
    public func seek(to cursor: Int) { self.cursor = cursor }

    public func next() throws -> TrainingSequence {
        let epoch = cursor / count, pos = cursor % count
        cursor += 1
        guard let seed else { return try sequence(pos) }
        if epochOrder?.epoch != epoch {
            var rng = SplitMix64(seed: seed &+ UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15)
            var order = Array(0..<count)
            for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            epochOrder = (epoch, order)
        }
        return try sequence(epochOrder!.order[pos])
    }

    /// Sequence `index` in storage order (evaluation reads these unshuffled).
    public func sequence(_ index: Int) throws -> TrainingSequence {
        switch source {
        case .chain(let next):
            var rng = SplitMix64(seed: 0xC0FFEE &+ UInt64(index))
            var ids = [Int32](repeating: 0, count: length)
            ids[0] = Int32(rng.next() % UInt64(next.count))
            for t in 1..<length {
                ids[t] = rng.next() % 10 == 0 ? Int32(rng.next() % UInt64(next.count)) : next[Int(ids[t - 1])]
            }
            return TrainingSequence(ids: ids, labels: nil, documentStarts: nil)
        case .stream(let ds):
            return TrainingSequence(ids: try ds.tokens(offset: index * length, count: length), labels: nil,
                                    documentStarts: nil)
        case .rows(let ds):
            let ids = try ds.row(index)
            return TrainingSequence(ids: ids, labels: try ds.optionalRow("labels", index),
                                    documentStarts: try ds.documentStarts(index))
        }
    }
}
