/// Row ops of S2-Attn sequence parallelism (docs/CONVENTIONS.md §17): a sequence spread over ranks, each holding
/// consecutive rows, with the shifted heads' keys and values of the previous rank's last half group received as
/// halo rows. Forward and backward side by side.

/// The neighbours of one rank of a sequence: rows pass forward to the next rank, their gradients come back. Every
/// rank of the sequence makes the same calls in the same order (the ranks run the same graph), so the messages pair.
public protocol HaloExchange: AnyObject {
    /// Whether some rank holds the rows before this rank's (false on the first).
    var hasPrevious: Bool { get }
    /// Whether some rank holds the rows after this rank's (false on the last).
    var hasNext: Bool { get }
    /// Sends `send` to the next rank while receiving the previous rank's rows into `receive` (either may be empty).
    func passForward(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>)
    /// Sends `send` to the previous rank while receiving the next rank's into `receive` (either may be empty).
    func passBackward(send: UnsafeBufferPointer<Float>, receive: UnsafeMutableBufferPointer<Float>)
}

extension Graph {
    /// x [T, W] after the previous rank's last `rows` rows of the same tensor: [rows + T, W] ([T, W] on the first
    /// rank); this rank's last `rows` rows go to the next rank. Backward: the halo rows' gradient goes back to the
    /// previous rank, and the next rank's gradient for this rank's last rows is added to x's.
    public func haloRows(_ x: Variable, rows h: Int, exchange: HaloExchange) -> Variable {
        let (t, w) = (x.shape[0], x.shape[1])
        precondition(h <= t, "haloRows: \(h) halo rows from a slice of \(t)")
        let received = exchange.hasPrevious ? h : 0, sent = exchange.hasNext ? h : 0
        let y = Tensor(uninitialized: [received + t, w])
        exchange.passForward(send: UnsafeBufferPointer(start: x.value.data + (t - sent) * w, count: sent * w),
                             receive: UnsafeMutableBufferPointer(start: y.data, count: received * w))
        (y.data + received * w).update(from: x.value.data, count: t * w)
        return output(y, [x]) { out in
            let dy = out.grad!, dx = x.gradBuffer()
            let fromNext = Tensor(uninitialized: [max(sent, 1), w])
            exchange.passBackward(send: UnsafeBufferPointer(start: dy.data, count: received * w),
                                  receive: UnsafeMutableBufferPointer(start: fromNext.data, count: sent * w))
            Vec.add(dx.data, dy.data + received * w, t * w)
            if sent > 0 { Vec.add(dx.data + (t - sent) * w, fromNext.data, sent * w) }
        }
    }

    /// x [T, W] after `rows` zero rows: [rows + T, W] (the halo's query rows, whose outputs are dropped).
    public func padRows(_ x: Variable, leading n: Int) -> Variable {
        guard n > 0 else { return x }
        let (t, w) = (x.shape[0], x.shape[1])
        let y = Tensor(zeros: [n + t, w])
        (y.data + n * w).update(from: x.value.data, count: t * w)
        return output(y, [x]) { out in Vec.add(x.gradBuffer().data, out.grad!.data + n * w, t * w) }
    }

    /// x [n + T, W] without its first `n` rows: [T, W].
    public func dropRows(_ x: Variable, leading n: Int) -> Variable {
        guard n > 0 else { return x }
        let w = x.shape[1], t = x.shape[0] - n
        let y = x.value.rows(n..<(n + t))
        return output(y, [x]) { out in Vec.add(x.gradBuffer().data + n * w, out.grad!.data, t * w) }
    }
}
