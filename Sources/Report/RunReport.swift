import Engine
import Evaluation
import Foundation
import Training

/// `longtune report`: one self-contained HTML page (inline SVG and CSS, nothing fetched) with a
/// run's training curves from metrics.jsonl, perplexity by context length from `eval perplexity
/// --json` files, the passkey map from `eval passkey --json` files, and the run's recipe, model,
/// versions and machine from its latest checkpoint.
public struct RunReport {
    /// An evaluation JSON file and the label its line or map gets.
    public struct Evaluation {
        public var label: String
        public var url: URL
        public init(label: String, url: URL) {
            self.label = label
            self.url = url
        }
    }

    public let runDir: URL
    public var evaluations: [Evaluation]
    /// Seconds between rewrites in live mode (the page then reloads itself as often); nil: static.
    public var refreshSeconds: Int?

    public init(runDir: URL, evaluations: [Evaluation], refreshSeconds: Int? = nil) {
        self.runDir = runDir
        self.evaluations = evaluations
        self.refreshSeconds = refreshSeconds
    }

    /// The page.
    public func html() throws -> String {
        let metrics = MetricsLog(url: runDir.appendingPathComponent("metrics.jsonl")).read()
        var body = "<h1>LongTune run: \(escape(runDir.lastPathComponent))</h1>"
        body += "<p class=\"note\">\(escape(runDir.path)) · written \(escape(Self.timestamp()))"
        if metrics.skippedLines > 0 {
            body += " · \(metrics.skippedLines) unreadable line(s) of metrics.jsonl skipped"
        }
        body += "</p>"
        body += "<h2>Training</h2>" + trainingCharts(metrics.records)
        var perplexity: [(label: String, report: PerplexityReport)] = []
        var passkey: [(label: String, report: PasskeyReport)] = []
        var ruler: [(label: String, report: RulerReport)] = []
        for e in evaluations {
            switch try EvaluationFile.read(e.url) {
            case .perplexity(let r): perplexity.append((e.label, r))
            case .passkey(let r): passkey.append((e.label, r))
            case .ruler(let r): ruler.append((e.label, r))
            }
        }
        if !perplexity.isEmpty { body += "<h2>Perplexity by context length</h2>" + perplexityChart(perplexity) }
        if !passkey.isEmpty {
            body += "<h2>Passkey retrieval</h2>" + passkey.map { passkeyMap($0.label, $0.report) }.joined()
        }
        if !ruler.isEmpty { body += "<h2>RULER</h2>" + ruler.map { rulerMap($0.label, $0.report) }.joined() }
        body += "<h2>Run</h2>" + runTables()
        return Self.page(title: "LongTune run: \(runDir.lastPathComponent)", body: body, refresh: refreshSeconds)
    }

    // MARK: charts

    func trainingCharts(_ records: [MetricRecord]) -> String {
        func series(_ figure: KeyPath<MetricRecord, Double?>, _ label: String,
                    markersOnly: Bool = false) -> LineChart.Series {
            let points = records.compactMap { r in r[keyPath: figure].map { (Double(r.step), $0) } }
            return LineChart.Series(label: label, points: points, markersOnly: markersOnly)
        }
        let loss = series(\.loss, "training loss")
        let smoothed = LineChart.Series(label: "smoothed (EMA 0.6)", points: Self.smoothed(loss.points, weight: 0.6))
        var charts = [
            LineChart(title: "Loss", xLabel: "step", yLabel: "cross-entropy (nats/token)",
                      series: [loss, smoothed, series(\.evalLoss, "evaluation loss", markersOnly: true)]),
            LineChart(title: "Learning rate (adapters)", xLabel: "step", yLabel: "learning rate",
                      series: [series(\.lr, "learning rate")]),
            LineChart(title: "Gradient norm (before clipping)", xLabel: "step", yLabel: "global L2 norm",
                      series: [series(\.gradNorm, "gradient norm")]),
            LineChart(title: "Throughput", xLabel: "step", yLabel: "tokens/s",
                      series: [series(\.tokensPerSecond, "tokens/s")]),
            LineChart(title: "Peak memory", xLabel: "step", yLabel: "peak RSS (GiB)",
                      series: [series(\.peakRSSGiB, "peak resident set")]),
        ]
        for i in charts.indices { charts[i].integerX = true }
        return "<div class=\"grid\">" + charts.map { $0.svg() }.joined() + "</div>"
    }

    /// TensorBoard-style exponential moving average with bias correction (NaN points skipped).
    static func smoothed(_ points: [(x: Double, y: Double)], weight: Double) -> [(x: Double, y: Double)] {
        var avg = 0.0, n = 0
        return points.compactMap { p in
            guard p.y.isFinite else { return nil }
            n += 1
            avg = weight * avg + (1 - weight) * p.y
            return (p.x, avg / (1 - Foundation.pow(weight, Double(n))))
        }
    }

    func perplexityChart(_ runs: [(label: String, report: PerplexityReport)]) -> String {
        var chart = LineChart(title: "Perplexity by context length", xLabel: "context length (tokens)",
                              yLabel: "perplexity (log scale)", series: [], logY: true)
        var windows = Set<Int>()
        for (label, report) in runs {
            let points = report.results.map { (x: Double($0.context), y: $0.perplexity) }.sorted { $0.x < $1.x }
            chart.series.append(.init(label: label, points: points))
            windows.insert(report.originalContext)
        }
        chart.markers = windows.sorted().map { (Double($0), "original window \($0)") }
        chart.xTicks = Array(Set(chart.series.flatMap { $0.points.map(\.x) })).sorted()
        return chart.svg()
    }

    func passkeyMap(_ label: String, _ report: PasskeyReport) -> String {
        let cells = report.results.flatMap { r in
            r.depths.map {
                HeatMap.Cell(context: Double(r.context), depth: $0.depth, retrieved: $0.retrieved, trials: $0.trials)
            }
        }
        return HeatMap(title: "Passkey retrieval: \(label)", cells: cells).svg()
    }

    /// RULER's scores: a row per task in the order run, then the average per length; the effective length in the title.
    func rulerMap(_ label: String, _ report: RulerReport) -> String {
        var tasks: [String] = []
        for r in report.results where !tasks.contains(r.task) { tasks.append(r.task) }
        func cell(_ task: String, _ row: Int, _ context: Int, _ score: Double) -> HeatMap.Cell {
            HeatMap.Cell(column: Double(context), row: Double(row), score: score / 100, text: String(format: "%.1f", score),
                         data: [("context", "\(context)"), ("task", task), ("score", "\(score)")])
        }
        let cells = report.results.map { cell($0.task, tasks.firstIndex(of: $0.task)!, $0.context, $0.score) }
            + report.averages.map { cell("average", tasks.count, $0.context, $0.score) }
        let effective = report.effectiveLength.map { "effective length \($0)" } ?? "no effective length"
        var map = HeatMap(title: "RULER: \(label) (\(effective) at \(String(format: "%.1f", report.threshold)))",
                          cells: cells)
        let names = tasks + ["average"]
        map.rowLabel = { names[Int($0)] }
        map.rowAxis = "task"
        map.scaleUnit = "score"
        map.rowLabelWidth = 130
        map.gapBeforeRow = Double(tasks.count)
        return map.svg()
    }

    // MARK: tables

    /// Recipe, model, versions and machine from the newest checkpoint's state.json.
    func runTables() -> String {
        guard let state = TrainerState.latest(in: runDir) else {
            let path = runDir.appendingPathComponent("latest/state.json").path
            return "<p class=\"note\">No checkpoint yet (\(escape(path))): the recipe and model appear once one is "
                + "written.</p>"
        }
        var rows: [(String, String)] = []
        for (k, v) in state.versions.sorted(by: { $0.key < $1.key }) {
            rows.append((k == "longtune" ? "LongTune version" : k, v))
        }
        rows.append(("checkpoint step", "\(state.step)"))
        if rows.allSatisfy({ $0.0 != "machine" }) { rows.append(("machine (this report's)", Machine.summary)) }
        var out = table("Run", rows)
        if let config = (try? JSONSerialization.jsonObject(with: Data(state.modelConfig.utf8))) as? [String: Any] {
            let keys = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rope_theta",
                        "rope_scaling"]
            out += table("Model", keys.compactMap { k in config[k].map { (k, Self.render($0)) } })
        }
        let recipeTree = try? JSONSerialization.jsonObject(with: JSONEncoder().encode(state.recipe))
        if let recipe = recipeTree as? [String: Any] {
            var recipeRows: [(String, String)] = []
            for section in recipe.keys.sorted() {
                guard let values = recipe[section] as? [String: Any] else { continue }
                for k in values.keys.sorted() { recipeRows.append(("\(section).\(k)", Self.render(values[k]!))) }
            }
            out += table("Recipe", recipeRows)
        }
        return out
    }

    func table(_ caption: String, _ rows: [(String, String)]) -> String {
        "<table><caption>\(escape(caption))</caption>"
            + rows.map { "<tr><th>\(escape($0.0))</th><td>\(escape($0.1))</td></tr>" }.joined() + "</table>"
    }

    // MARK: helpers

    static func render(_ v: Any) -> String {
        if v is NSNull { return "unset" }
        // JSON booleans arrive as NSNumbers of type char.
        if let n = v as? NSNumber, String(cString: n.objCType) == "c" { return n.boolValue ? "true" : "false" }
        if let a = v as? [Any] { return "[" + a.map(render).joined(separator: ", ") + "]" }
        if let d = v as? [String: Any] {
            return "{" + d.keys.sorted().map { "\($0): \(render(d[$0]!))" }.joined(separator: ", ") + "}"
        }
        return "\(v)"
    }

    static func timestamp() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss zzz"
        return f.string(from: Date())
    }

    static func page(title: String, body: String, refresh: Int?) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
        \(refresh.map { "<meta http-equiv=\"refresh\" content=\"\($0)\">" } ?? "")
        <style>
        body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1b1b1b; \
        margin: 24px auto;
               max-width: 1360px; padding: 0 16px; }
        h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
        .note { color: #555; }
        .grid { display: flex; flex-wrap: wrap; gap: 12px; }
        svg { background: white; border: 1px solid #ddd; }
        svg text { font-family: inherit; fill: #1b1b1b; } svg .title { font-size: 14px; font-weight: 600; }
        svg .tick, svg .small { font-size: 11px; } svg .axis { font-size: 12px; } svg .empty { fill: #777; }
        table { border-collapse: collapse; margin: 8px 24px 16px 0; display: inline-table; vertical-align: top; }
        caption { text-align: left; font-weight: 600; padding: 4px 0; }
        th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px; }
        th { background: #f4f4f4; font-weight: 500; }
        </style></head>
        <body>\(body)</body></html>
        """
    }
}
