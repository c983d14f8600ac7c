import Foundation

/// Where a training step's time goes (`longtune bench train --profile`, docs/ARCHITECTURE.md): each op times itself
/// under its phase, and its backward step under the matching phase; time inside an op nested in another goes to the
/// inner one. Off unless switched on; only the thread that runs the step records (ops run there, their parallel
/// loops inside them).
public enum Profile {
    public enum Phase: String, CaseIterable, Sendable {
        case frozenProducts = "frozen products (x·Wᵀ and input gradients)"
        case loraProducts = "LoRA products"
        case attentionForward = "attention forward"
        case attentionBackward = "attention backward"
        case rowwise = "norms, RoPE, SwiGLU, residuals, embedding"
        case lmHeadLoss = "LM head and loss"
        case optimizer = "optimizer and clipping"

        /// The phase of this op's backward step.
        var backward: Phase { self == .attentionForward ? .attentionBackward : self }
        /// The JSON key.
        public var key: String {
            switch self {
            case .frozenProducts: "frozen_products"
            case .loraProducts: "lora_products"
            case .attentionForward: "attention_forward"
            case .attentionBackward: "attention_backward"
            case .rowwise: "rowwise"
            case .lmHeadLoss: "lm_head_loss"
            case .optimizer: "optimizer"
            }
        }
    }

    nonisolated(unsafe) public static var isOn = false
    nonisolated(unsafe) static var totals = [Phase: Double]()
    nonisolated(unsafe) static var stack: [(phase: Phase, since: UInt64)] = []
    nonisolated(unsafe) static var underfilled = 0.0

    /// The seconds of each phase since `reset`.
    public static var seconds: [Phase: Double] { totals }
    /// Seconds inside the engine's parallel loops that had fewer iterations than threads (some threads idle).
    public static var underfilledSeconds: Double { underfilled }

    public static func reset() {
        totals = [:]
        stack = []
        underfilled = 0
    }

    /// The innermost phase running now (recorded with a backward step).
    static var current: Phase? { isOn && Thread.isMainThread ? stack.last?.phase : nil }

    /// Runs `body`, its time counted under `phase`.
    @inline(__always)
    public static func time<R>(_ phase: Phase?, _ body: () throws -> R) rethrows -> R {
        guard isOn, let phase, Thread.isMainThread else { return try body() }
        let now = DispatchTime.now().uptimeNanoseconds
        if let outer = stack.last { totals[outer.phase, default: 0] += Double(now - outer.since) * 1e-9 }
        stack.append((phase, now))
        defer {
            let end = DispatchTime.now().uptimeNanoseconds
            let inner = stack.removeLast()
            totals[inner.phase, default: 0] += Double(end - inner.since) * 1e-9
            if !stack.isEmpty { stack[stack.count - 1].since = end }
        }
        return try body()
    }

    /// Counts a parallel loop of `n` iterations on `threads` workers that leaves some idle.
    @inline(__always)
    static func parallelLoop(_ n: Int, threads: Int, _ body: () -> Void) {
        guard isOn, n < threads, Thread.isMainThread else { return body() }
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        underfilled += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
    }
}

/// The profile of `steps` measured training steps, per step (`bench train --profile`).
public struct StepProfile {
    public let rows: [(name: String, key: String, seconds: Double)]
    public let stepSeconds: Double
    public let idleLoopSeconds: Double

    public init(seconds: [Profile.Phase: Double], idleLoops: Double, total: Double, steps: Int) {
        let n = Double(max(steps, 1))
        var rows = Profile.Phase.allCases.map { ($0.rawValue, $0.key, (seconds[$0] ?? 0) / n) }
        let timed = rows.reduce(0) { $0 + $1.2 }
        rows.append(("the rest (allocation, copies, tape, checkpoint glue)", "rest", max(0, total / n - timed)))
        self.rows = rows
        stepSeconds = total / n
        idleLoopSeconds = idleLoops / n
    }

    public var json: [String: Double] {
        Dictionary(uniqueKeysWithValues: rows.map { ($0.key, $0.seconds) })
            .merging(["step": stepSeconds, "parallel_loops_with_idle_threads": idleLoopSeconds]) { $1 }
    }

    public var table: String {
        var lines = ["phase (per step)                                        seconds   share"]
        for r in rows {
            lines.append(r.name.padding(toLength: 54, withPad: " ", startingAt: 0)
                         + String(format: "%9.3f  %5.1f%%", r.seconds, 100 * r.seconds / max(stepSeconds, 1e-12)))
        }
        lines.append(String(format: "%@%9.3f  %5.1f%%  (inside the phases above)",
                            "parallel loops with fewer iterations than threads".padding(toLength: 54, withPad: " ",
                                                                                       startingAt: 0),
                            idleLoopSeconds, 100 * idleLoopSeconds / max(stepSeconds, 1e-12)))
        return lines.joined(separator: "\n")
    }
}
