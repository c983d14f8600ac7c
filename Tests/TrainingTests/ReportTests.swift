import Foundation
import FoundationXML
import Report
import TestSupport
import Training
import XCTest

/// The report's pictures are valid SVG whose points map back to the data they came from, and odd
/// inputs (empty, one point, NaN, a torn metrics line, repeated steps) render without breaking.
final class ReportTests: XCTestCase {
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("report") }
    override func tearDown() { tmp.remove() }

    /// An attribute's value (looked up by name: FoundationXML's attribute(forName:) misses them in
    /// a namespaced SVG document).
    func value(_ e: XMLElement, _ name: String) -> String? { e.attributes?.first { $0.name == name }?.stringValue }

    func parse(_ svg: String) throws -> XMLElement {
        try XCTUnwrap(try XMLDocument(xmlString: svg).rootElement())
    }

    /// Every (x, y) drawn in `svg`, per series label, mapped back through the plot's axis attributes.
    func plotted(_ svg: String) throws -> [String: [(x: Double, y: Double)]] {
        let root = try parse(svg)
        guard let plot = try root.nodes(forXPath: "//*[@class='plot']").first as? XMLElement else { return [:] }
        func attr(_ e: XMLElement, _ name: String) -> Double { Double(value(e, name)!)! }
        let (x0, x1, y0, y1) = (attr(plot, "data-x-min"), attr(plot, "data-x-max"), attr(plot, "data-y-min"), attr(plot, "data-y-max"))
        let (l, r, t, b) = (attr(plot, "data-left"), attr(plot, "data-right"), attr(plot, "data-top"), attr(plot, "data-bottom"))
        let logY = value(plot, "data-log-y") == "true"
        func data(_ px: Double, _ py: Double) -> (x: Double, y: Double) {
            let f = (b - py) / (b - t)
            let y = logY ? Foundation.pow(10, log10(y0) + f * (log10(y1) - log10(y0))) : y0 + f * (y1 - y0)
            return (x0 + (px - l) / (r - l) * (x1 - x0), y)
        }
        var out: [String: [(x: Double, y: Double)]] = [:]
        for case let group as XMLElement in try plot.nodes(forXPath: "*[@class='series']") {
            let label = value(group, "data-series")!
            var points: [(x: Double, y: Double)] = []
            for case let line as XMLElement in try group.nodes(forXPath: "*[local-name()='polyline']") {
                for pair in value(line, "points")!.split(separator: " ") {
                    let c = pair.split(separator: ",").map { Double($0)! }
                    points.append(data(c[0], c[1]))
                }
            }
            if points.isEmpty {   // markers only
                for case let c as XMLElement in try group.nodes(forXPath: "*[local-name()='circle']") {
                    points.append(data(attr(c, "cx"), attr(c, "cy")))
                }
            }
            out[label] = points
        }
        return out
    }

    func assertMapsBack(_ drawn: [(x: Double, y: Double)], _ data: [(x: Double, y: Double)], _ what: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(drawn.count, data.count, what, file: file, line: line)
        for (d, e) in zip(drawn, data) {
            XCTAssertEqual(d.x, e.x, accuracy: 0.01 * max(1, abs(e.x)), what, file: file, line: line)
            XCTAssertEqual(d.y, e.y, accuracy: 0.01 * max(1, abs(e.y)), what, file: file, line: line)
        }
    }

    func testPlottedPointsMapBackToTheirData() throws {
        let a: [(x: Double, y: Double)] = (1...30).map { (Double($0), 5 * Foundation.exp(-Double($0) / 10) + 1) }
        let b: [(x: Double, y: Double)] = [(2048, 6.6), (8192, 5.1), (16384, 16.9)]
        let linear = LineChart(title: "Loss", xLabel: "step", yLabel: "loss", series: [.init(label: "train", points: a)])
        assertMapsBack(try XCTUnwrap(try plotted(linear.svg())["train"]), a, "linear axis")
        let log = LineChart(title: "Perplexity", xLabel: "context", yLabel: "perplexity", series: [.init(label: "base", points: b)],
                            logY: true)
        assertMapsBack(try XCTUnwrap(try plotted(log.svg())["base"]), b, "log axis")
    }

    /// A series that barely moves (peak memory 3.0701 → 3.0709 GiB) still gets tick labels that differ.
    func testTickLabelsOfANarrowRangeDiffer() throws {
        let memory = LineChart(title: "Peak memory", xLabel: "step", yLabel: "GiB",
                               series: [.init(label: "rss", points: [(1, 3.0701), (2, 3.0709)])])
        let ticks = try parse(memory.svg()).nodes(forXPath: "//*[@class='tick']").compactMap(\.stringValue)
        let yLabels = ticks.filter { $0.hasPrefix("3.07") }
        XCTAssertGreaterThanOrEqual(yLabels.count, 3, "\(ticks)")
        XCTAssertEqual(Set(yLabels).count, yLabels.count, "every y tick has its own label: \(ticks)")
        XCTAssertTrue(yLabels.allSatisfy { (3.07...3.071).contains(Double($0)!) }, "\(ticks)")
    }

    func testEmptyOnePointAndNaNSeriesRender() throws {
        let empty = LineChart(title: "Empty", xLabel: "x", yLabel: "y", series: [.init(label: "none", points: [])])
        XCTAssertTrue(try parse(empty.svg()).stringValue!.contains("no data"))
        let one = LineChart(title: "One", xLabel: "x", yLabel: "y", series: [.init(label: "p", points: [(3, 7)])])
        let root = try parse(one.svg())
        XCTAssertEqual(try root.nodes(forXPath: "//*[@class='series']/*[local-name()='circle']").count, 1)
        let gap = LineChart(title: "Gap", xLabel: "x", yLabel: "y",
                            series: [.init(label: "g", points: [(1, 1), (2, 2), (3, .nan), (4, 3), (5, 4)])])
        let lines = try parse(gap.svg()).nodes(forXPath: "//*[local-name()='polyline']")
        XCTAssertEqual(lines.count, 2, "a NaN breaks the line in two")
        XCTAssertFalse(gap.svg().contains("nan"))
    }

    func writeRun(_ metrics: String) throws -> URL {
        let run = tmp.path("run")
        try FileManager.default.createDirectory(at: run, withIntermediateDirectories: true)
        try metrics.write(to: run.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
        return run
    }

    /// A resumed run that repeated steps 3 and 4, and a crash mid-write: one point per step, the
    /// torn line skipped and said so, and every SVG of the page well-formed.
    func testTornAndRepeatedMetricsRenderOncePerStep() throws {
        var lines = (1...4).map { #"{"step": \#($0), "loss": \#(10 - Double($0)), "lr": 0.001}"# }
        lines += (3...5).map { #"{"step": \#($0), "loss": \#(20 - Double($0)), "lr": 0.001}"# }
        let run = try writeRun(lines.joined(separator: "\n") + "\n" + #"{"step": 6, "lo"#)
        let page = try RunReport(runDir: run, evaluations: []).html()
        XCTAssertTrue(page.contains("1 unreadable line(s)"))
        let svgs = page.components(separatedBy: "<svg").dropFirst().map { "<svg" + $0.components(separatedBy: "</svg>")[0] + "</svg>" }
        XCTAssertEqual(svgs.count, 5)
        for svg in svgs { XCTAssertNoThrow(try parse(svg)) }
        let loss = try XCTUnwrap(try plotted(svgs[0])["training loss"])
        assertMapsBack(loss, [(1, 9), (2, 8), (3, 17), (4, 16), (5, 15)], "one point per step, the later record wins")
    }

    /// A line as earlier versions wrote it (every figure a JSON number, "step": 3.0) reads, and a record writes the same
    /// keys back.
    func testMetricRecordReadsEarlierLinesAndWritesTheSameKeys() throws {
        let line = #"{"elapsed":1.5,"eval_loss":2.5,"grad_norm":0.5,"loss":2,"lr":0.001,"peak_rss_gib":0.1,"step":3.0,"#
            + #""tokens_per_second":100}"#
        let record = try JSONDecoder().decode(MetricRecord.self, from: Data(line.utf8))
        XCTAssertEqual(record, MetricRecord(step: 3, loss: 2, lr: 0.001, gradNorm: 0.5, elapsed: 1.5, tokensPerSecond: 100,
                                            peakRSSGiB: 0.1, evalLoss: 2.5))
        let written = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as! [String: Any]
        let read = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        XCTAssertEqual(Set(written.keys), Set(read.keys))
    }

    /// The run tables come from the newest checkpoint's state (`TrainerState.latest`): step, versions, model, recipe.
    func testRunTablesShowTheNewestCheckpoint() throws {
        let run = tmp.path("trained")
        let recipe = try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "training.steps=2", "training.warmup_steps=0", "checkpoints.every=1", "logging.eval_every=0",
            "checkpoints.dir=\(run.path)"])
        try Trainer(recipe: recipe, log: { _ in }).run()
        XCTAssertEqual(TrainerState.latest(in: run)?.step, 2)
        let page = try RunReport(runDir: run, evaluations: []).html()
        for row in ["<th>checkpoint step</th><td>2</td>", "<th>LongTune version</th>", "<th>hidden_size</th>",
                    "<th>training.steps</th><td>2</td>"] {
            XCTAssertTrue(page.contains(row), row)
        }
        XCTAssertNil(TrainerState.latest(in: tmp.path("never-trained")))
    }

    func testPerplexityLinesAndPasskeyCellsComeFromTheirFiles() throws {
        let run = try writeRun("")
        let ppl = tmp.path("ppl.json"), pk = tmp.path("pk.json")
        // As eval perplexity/passkey --json write them (their Codable types in Evaluation).
        func result(_ c: Int, _ p: Double) -> String {
            #"{"context": \#(c), "windows": 1, "tokens": \#(c), "nll": \#(log(p)), "perplexity": \#(p)}"#
        }
        try (#"{"model": "m", "original_context": 8192, "results": ["# + result(2048, 6.6) + ", " + result(16384, 16.9)
             + "]}").write(to: ppl, atomically: true, encoding: .utf8)
        func trial(_ c: Int, _ d: Double, _ hit: Bool) -> String {
            #"{"context": \#(c), "depth": \#(d), "passkey": 1, "retrieved": \#(hit), "predicted": "1", "answerLogProb": 0}"#
        }
        func depth(_ d: Double, _ trials: Int, _ retrieved: Int) -> String {
            #"{"depth": \#(d), "trials": \#(trials), "retrieved": \#(retrieved)}"#
        }
        try (#"{"model": "m", "results": [{"context": 4096, "accuracy": 0.67, "depths": ["# + depth(0, 1, 1) + ", "
             + depth(1, 2, 1) + #"], "trials": ["# + [trial(4096, 0, true), trial(4096, 1, false), trial(4096, 1, true)]
                .joined(separator: ", ") + #"]}, {"context": 8192, "accuracy": 0, "depths": ["# + depth(0, 1, 0)
             + #"], "trials": ["# + trial(8192, 0, false) + "]}]}").write(to: pk, atomically: true, encoding: .utf8)
        let page = try RunReport(runDir: run, evaluations: [.init(label: "base", url: ppl), .init(label: "tuned", url: pk)]).html()
        let svgs = page.components(separatedBy: "<svg").dropFirst().map { "<svg" + $0.components(separatedBy: "</svg>")[0] + "</svg>" }
        let chart = try XCTUnwrap(svgs.first { $0.contains("Perplexity by context length") })
        assertMapsBack(try XCTUnwrap(try plotted(chart)["base"]), [(2048, 6.6), (16384, 16.9)], "perplexity line")
        XCTAssertTrue(chart.contains("original window 8192"))
        let map = try parse(try XCTUnwrap(svgs.first { $0.contains("Passkey retrieval: tuned") }))
        var cells: [String: String] = [:]
        for case let c as XMLElement in try map.nodes(forXPath: "//*[@class='cell']") {
            cells[value(c, "data-context")! + "@" + value(c, "data-depth")!] = value(c, "data-retrieved")! + "/" + value(c, "data-trials")!
        }
        XCTAssertEqual(cells, ["4096@0.0": "1/1", "4096@1.0": "1/2", "8192@0.0": "0/1"])
        let other = tmp.path("other.json")
        try #"{"results": [{"context": 2048}]}"#.write(to: other, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport(runDir: run, evaluations: [.init(label: "x", url: other)]).html()) {
            XCTAssertTrue("\($0)".contains("other.json: not a file written by eval perplexity, passkey or ruler --json"), "\($0)")
        }
    }

    func testRulerCellsComeFromTheirFile() throws {
        let run = try writeRun("")
        let url = tmp.path("ruler.json")
        // As eval ruler --json writes it (RulerReport in Evaluation).
        func result(_ task: String, _ c: Int, _ score: Double) -> String {
            #"{"task": "\#(task)", "context": \#(c), "score": \#(score), "samples": []}"#
        }
        try (#"{"model": "m", "chatTemplate": true, "seed": 42, "threshold": 85.6, "seconds": 60, "results": ["#
             + [result("vt", 4096, 100), result("cwe", 4096, 80), result("vt", 8192, 40), result("cwe", 8192, 0)]
                .joined(separator: ", ")
             + #"], "averages": [{"context": 4096, "score": 90}, {"context": 8192, "score": 20}], "effectiveLength": 4096}"#)
            .write(to: url, atomically: true, encoding: .utf8)
        let page = try RunReport(runDir: run, evaluations: [.init(label: "tuned", url: url)]).html()
        let svg = try XCTUnwrap(page.components(separatedBy: "<svg").dropFirst()
            .map { "<svg" + $0.components(separatedBy: "</svg>")[0] + "</svg>" }.first { $0.contains("RULER: tuned") })
        XCTAssertTrue(svg.contains("effective length 4096"), svg)
        var cells: [String: String] = [:], top: [String: Double] = [:]
        for case let c as XMLElement in try parse(svg).nodes(forXPath: "//*[@class='cell']") {
            cells[value(c, "data-task")! + "@" + value(c, "data-context")!] = value(c, "data-score")!
            top[value(c, "data-task")!] = Double(value(c, "y")!)!
        }
        let rowHeight = try XCTUnwrap(top["cwe"]) - XCTUnwrap(top["vt"])
        XCTAssertGreaterThan(try XCTUnwrap(top["average"]) - XCTUnwrap(top["cwe"]), rowHeight,
                             "the average row is set apart from the tasks")
        XCTAssertEqual(cells, ["vt@4096": "100.0", "cwe@4096": "80.0", "vt@8192": "40.0", "cwe@8192": "0.0",
                               "average@4096": "90.0", "average@8192": "20.0"])
        for label in ["vt", "cwe", "average"] { XCTAssertTrue(svg.contains(">\(label)</text>"), "row \(label)") }
    }
}
