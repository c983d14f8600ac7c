import ArgumentParser
import Engine
import Formats
import Foundation
import Report
import Training

/// `longtune report`: one HTML page for a run, optionally following it live.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "One self-contained HTML page: training curves, perplexity by context, passkey map, "
            + "the run's recipe.")

    @Argument(help: "The run directory (checkpoints.dir: metrics.jsonl, latest/).") var runDirectory: String
    @Argument(help: """
        eval perplexity/passkey --json files, each optionally LABEL=FILE.json \
        (default label: the file name).
        """)
    var evaluations: [String] = []
    @Option(help: "Output file (default: RUN/report.html).") var out: String?
    @Flag(help: """
        Rewrite the page every --every seconds until the run reaches its last step (or Ctrl-C); \
        the page reloads itself.
        """)
    var live = false
    @Option(help: "Seconds between rewrites with --live.") var every = 10

    func run() throws {
        let runDir = URL(fileURLWithPath: runDirectory)
        guard FileManager.default.fileExists(atPath: runDir.path) else {
            throw LongTuneError("\(runDir.path): no such run directory (give the recipe's checkpoints.dir)")
        }
        guard (1...86_400).contains(every) else {
            throw LongTuneError("--every must be 1...86400 seconds, got \(every)")
        }
        let target = out.map { URL(fileURLWithPath: $0) } ?? runDir.appendingPathComponent("report.html")
        try OutputPath.check(target.path, option: out == nil ? "the report (RUN/report.html)" : "--out", kind: .file)
        var report = RunReport(runDir: runDir, evaluations: try evaluations.map(Self.evaluation), refreshSeconds: nil)
        guard live else {
            try report.write(to: target)
            print("report -> \(target.path)")
            return
        }
        signal(SIGINT) { _ in stopRequestedByUser = true }
        print("following \(runDir.path): rewriting \(target.path) every \(every) s (Ctrl-C stops)")
        while !stopRequestedByUser && !Self.finished(runDir) {
            report.refreshSeconds = every
            try report.write(to: target)
            for _ in 0..<(every * 10) where !stopRequestedByUser { usleep(100_000) }
        }
        report.refreshSeconds = nil
        try report.write(to: target)
        print("report -> \(target.path)")
    }

    /// "LABEL=FILE.json" or "FILE.json" (labelled by its name).
    static func evaluation(_ arg: String) throws -> RunReport.Evaluation {
        if let eq = arg.firstIndex(of: "="),
           FileManager.default.fileExists(atPath: String(arg[arg.index(after: eq)...])) {
            return .init(label: String(arg[..<eq]), url: URL(fileURLWithPath: String(arg[arg.index(after: eq)...])))
        }
        guard FileManager.default.fileExists(atPath: arg) else {
            throw LongTuneError("\(arg): no such evaluation file (write one with eval perplexity/passkey --json FILE)")
        }
        let url = URL(fileURLWithPath: arg)
        return .init(label: url.deletingPathExtension().lastPathComponent, url: url)
    }

    /// True once the newest checkpoint is the recipe's last step.
    static func finished(_ runDir: URL) -> Bool {
        guard let state = TrainerState.latest(in: runDir) else { return false }
        return state.step >= state.recipe.training.steps
    }
}

nonisolated(unsafe) var stopRequestedByUser = false

extension RunReport {
    /// Writes the page atomically (a browser reloading it never sees half a file).
    func write(to url: URL) throws { try AtomicFile.write(Data(try html().utf8), to: url) }
}
