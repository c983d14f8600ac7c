import Engine
import Llama

/// How a world of ranks divides training (docs/CONVENTIONS.md §16–17): P consecutive ranks share each sequence, each
/// computing 1/P of its rows (the conditions: `SequenceShare.haloRows`), and size / P data-parallel groups take
/// different sequences. Validated once, where a run or a benchmark starts; `option` names the setting in errors.
public struct ParallelLayout {
    /// This rank's share of each sequence; nil with one rank per sequence.
    public let share: SequenceShare?
    /// The data-parallel groups and this rank's (each group computes a step's sequences with index ≡ its number).
    public let dataRanks: Int, dataRank: Int

    public init(ranksPerSequence p: Int, length: Int, attention: AttentionMode, world: World, option: String) throws {
        _ = try SequenceShare.haloRows(length: length, attention: attention, ranks: p, option: option)
        guard world.size % p == 0 else {
            throw LongTuneError("\(option) is \(p) ranks per sequence, but this run has \(world.size) "
                                + "process\(world.size == 1 ? "" : "es"): start it with mpirun -np N, "
                                + "N a multiple of \(p) (or set \(option) to 1)")
        }
        share = world.sequenceShare(length: length, perSequence: p)
        dataRanks = world.size / p
        dataRank = world.rank / p
    }
}
