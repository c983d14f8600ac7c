import CMPI
import Engine
import Foundation
import Llama

/// The processes one training run spans (docs/CONVENTIONS.md §16–17). Under `mpirun -np N` (Open MPI), the N ranks
/// of an MPI world: each computes the sequences of a step whose index modulo N is its rank, and the gradients are
/// summed over the ranks before clipping and AdamW. Started any other way, a world of one that never touches MPI,
/// so every single-process path runs exactly as it would without it.
public final class World: @unchecked Sendable {
    nonisolated(unsafe) public static let shared = World()

    public let rank: Int
    public let size: Int
    /// Rank 0 alone writes checkpoints, metrics and the progress line.
    public var isRoot: Bool { rank == 0 }

    /// Ranks on this machine (sharing its cores and memory).
    public var localSize: Int {
        size > 1 ? Parallel.localRanks() : 1
    }

    /// Whether mpirun started this process (Open MPI sets OMPI_COMM_WORLD_SIZE for each rank).
    public static var launchedByMPI: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    init() {
        guard Self.launchedByMPI else { (rank, size) = (0, 1); return }
        guard lt_mpi_init() == 0 else {
            FileHandle.standardError.write(Data("error: MPI_Init failed (started by mpirun, but no MPI world)\n".utf8))
            exit(1)
        }
        (rank, size) = (Int(lt_mpi_rank()), Int(lt_mpi_size()))
        atexit { _ = lt_mpi_finalize() }
    }

    /// t = the sum of t over the ranks, on every rank (in place).
    public func sum(_ t: Tensor) {
        guard size > 1 else { return }
        var offset = 0
        while offset < t.count {   // MPI counts are 32-bit
            let n = min(t.count - offset, Int(Int32.max))
            check(lt_mpi_sum_floats(t.data + offset, Int32(n)), "MPI_Allreduce")
            offset += n
        }
    }

    /// Every tensor's gradient summed over the ranks, on every rank (before clipping and AdamW, §16).
    public func sumGradients(_ parameters: [(String, Variable)]) {
        guard size > 1 else { return }
        for (_, p) in parameters { sum(p.gradBuffer()) }
    }

    /// The sum of x over the ranks.
    public func sum(_ x: Double) -> Double {
        guard size > 1 else { return x }
        var v = x
        check(lt_mpi_sum_doubles(&v, 1), "MPI_Allreduce")
        return v
    }

    /// The largest x over the ranks.
    public func max(_ x: Double) -> Double {
        guard size > 1 else { return x }
        var v = x
        check(lt_mpi_max_double(&v), "MPI_Allreduce")
        return v
    }

    /// Whether any rank says yes (every rank gets the same answer, so all act on it together).
    public func any(_ flag: Bool) -> Bool {
        guard size > 1 else { return flag }
        var v: Int32 = flag ? 1 : 0
        check(lt_mpi_max_int(&v), "MPI_Allreduce")
        return v != 0
    }

    /// This rank's share of a sequence of `length` tokens when `p` consecutive ranks share each sequence (sequence
    /// parallelism, docs/CONVENTIONS.md §17): ranks k·P … k·P + P − 1 hold its rows in order, exchanging halos
    /// with their neighbours; nil for p = 1. The callers check that p divides the world size.
    public func sequenceShare(length: Int, perSequence p: Int) -> SequenceShare? {
        precondition(p >= 1 && size % p == 0, "sequence share: \(p) ranks per sequence in a world of \(size)")
        guard p > 1 else { return nil }
        let position = rank % p
        let neighbours = SequenceNeighbours(world: self, previous: position > 0 ? rank - 1 : nil,
                                            next: position < p - 1 ? rank + 1 : nil)
        return SequenceShare(rank: position, of: p, length: length, exchange: neighbours)
    }

    /// Ends the whole run: this rank's message on stderr, then MPI_Abort, which makes mpirun stop every rank at once
    /// (none would otherwise wait forever in the next collective). Without mpirun: exit(1).
    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data("error (rank \(rank) of \(size)): \(message)\n".utf8))
        if size > 1 { lt_mpi_abort(1) }
        exit(1)
    }

    func check(_ status: Int32, _ what: String) {
        if status != 0 { abort("\(what) failed with MPI error \(status)") }
    }
}

/// A rank's neighbours in its sequence, exchanging halo rows with MPI_Sendrecv (docs/CONVENTIONS.md §17).
public final class SequenceNeighbours: HaloExchange {
    let world: World
    let previous: Int?
    let next: Int?
    /// Floats this rank has sent (forward halos and backward gradients); `bench train` reports them per step.
    public private(set) var floatsSent = 0

    init(world: World, previous: Int?, next: Int?) {
        self.world = world
        self.previous = previous
        self.next = next
    }

    public var hasPrevious: Bool { previous != nil }
    public var hasNext: Bool { next != nil }

    public func passForward(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>) {
        exchange(send: send, to: next, receive: receive, from: previous)
    }

    public func passBackward(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>) {
        exchange(send: send, to: previous, receive: receive, from: next)
    }

    func exchange(send: UnsafeBufferPointer<Float>, to dest: Int?, receive: UnsafeMutableBufferPointer<Float>,
                  from source: Int?) {
        precondition((dest == nil) == send.isEmpty && (source == nil) == receive.isEmpty,
                     "halo exchange: \(send.count) floats to rank \(dest ?? -1), \(receive.count) from \(source ?? -1)")
        guard dest != nil || source != nil else { return }
        floatsSent += send.count
        world.check(lt_mpi_sendrecv_floats(send.baseAddress, Int32(send.count), Int32(dest ?? -1),
                                           receive.baseAddress, Int32(receive.count), Int32(source ?? -1)),
                    "MPI_Sendrecv (halo rows)")
    }
}
