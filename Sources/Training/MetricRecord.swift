import Engine
import Formats
import Foundation

/// One line of a run's metrics.jsonl (and of a checkpoint's `metrics`): a step's training figures, or the step-0
/// evaluation before training (`step` 0 and `evalLoss` only). The JSON keys are the CodingKeys below, their one
/// place; `MetricsLog` writes and reads the file, the trainer and `report` use the fields.
public struct MetricRecord: Codable, Equatable, Sendable {
    public var step: Int
    public var loss, lr, gradNorm, elapsed, tokensPerSecond, peakRSSGiB, evalLoss: Double?

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, gradNorm = "grad_norm", elapsed, tokensPerSecond = "tokens_per_second"
        case peakRSSGiB = "peak_rss_gib", evalLoss = "eval_loss"
    }

    public init(step: Int, loss: Double? = nil, lr: Double? = nil, gradNorm: Double? = nil, elapsed: Double? = nil,
                tokensPerSecond: Double? = nil, peakRSSGiB: Double? = nil, evalLoss: Double? = nil) {
        self.step = step; self.loss = loss; self.lr = lr; self.gradNorm = gradNorm; self.elapsed = elapsed
        self.tokensPerSecond = tokensPerSecond; self.peakRSSGiB = peakRSSGiB; self.evalLoss = evalLoss
    }

    /// Earlier versions wrote every figure as a JSON number, the step included ("step": 3.0 reads as 3).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        step = Int(try c.decode(Double.self, forKey: .step))
        loss = try c.decodeIfPresent(Double.self, forKey: .loss)
        lr = try c.decodeIfPresent(Double.self, forKey: .lr)
        gradNorm = try c.decodeIfPresent(Double.self, forKey: .gradNorm)
        elapsed = try c.decodeIfPresent(Double.self, forKey: .elapsed)
        tokensPerSecond = try c.decodeIfPresent(Double.self, forKey: .tokensPerSecond)
        peakRSSGiB = try c.decodeIfPresent(Double.self, forKey: .peakRSSGiB)
        evalLoss = try c.decodeIfPresent(Double.self, forKey: .evalLoss)
    }

    /// One line of metrics.jsonl, or nil for a line that does not parse (a crash mid-write).
    static func parse<S: StringProtocol>(_ line: S) -> MetricRecord? {
        try? JSONDecoder().decode(MetricRecord.self, from: Data(line.utf8))
    }
}

/// metrics.jsonl: one JSON object per line, one record per step (plus the step-0 evaluation); the one writer and
/// reader of the file.
public struct MetricsLog {
    public let url: URL

    public init(url: URL) { self.url = url }

    /// Appends one whole line with a single write in append mode.
    func append(_ record: MetricRecord) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let line = try encoder.encode(record) + Data("\n".utf8)
        let fd = open(url.path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else {
            throw LongTuneError("\(url.path): cannot open for appending (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == line.count else {
            throw LongTuneError("\(url.path): appending a metrics record failed (\(String(cString: strerror(errno)))); "
                                + "is the disk full?")
        }
    }

    /// Drops the records of steps after `step` (a resume repeats them), keeping everything else.
    func truncate(afterStep step: Int) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else { return }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        let kept = lines.filter { MetricRecord.parse($0).map { $0.step <= step } ?? false }   // a torn line goes too
        guard kept.count != lines.count else { return }
        try AtomicFile.write(Data(kept.map { $0 + "\n" }.joined().utf8), to: url)
    }

    /// The records as a report reads them: one per step (a resumed run that repeated steps counts the last record of
    /// each), sorted by step, and how many lines did not parse (a crash mid-write).
    public func read() -> (records: [MetricRecord], skippedLines: Int) {
        guard let data = FileManager.default.contents(atPath: url.path) else { return ([], 0) }
        var byStep: [Int: MetricRecord] = [:], skipped = 0
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.isEmpty {
            guard let record = MetricRecord.parse(line) else { skipped += 1; continue }
            byStep[record.step] = record   // a repeated step replaces the older record
        }
        return (byStep.keys.sorted().map { byStep[$0]! }, skipped)
    }
}
