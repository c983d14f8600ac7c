import Foundation

/// A line chart as inline SVG: ticks and units on both axes, a legend, and series told apart by
/// dash pattern and marker as well as colour (readable in grey print).
///
/// The plot area carries its axis mapping as attributes (`data-x-min`, `data-x-max`, `data-y-min`,
/// `data-y-max`, `data-left`, `data-right`, `data-top`, `data-bottom`, `data-log-y`), so a point's
/// pixel coordinates map back to its data value (the tests do exactly that).
public struct LineChart {
    public struct Series {
        public var label: String
        public var points: [(x: Double, y: Double)]
        /// Draw markers only (no line): sparse series such as evaluation losses.
        public var markersOnly = false
        public init(label: String, points: [(x: Double, y: Double)], markersOnly: Bool = false) {
            self.label = label
            self.points = points
            self.markersOnly = markersOnly
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var logY = false
    /// x is a count (steps): ticks at whole numbers only.
    public var integerX = false
    /// Ticks at these x values instead of round numbers (e.g. the measured context lengths).
    public var xTicks: [Double]?
    /// Vertical reference lines: (x, label), e.g. the model's original context window.
    public var markers: [(x: Double, label: String)] = []
    public var width = 640.0, height = 340.0

    public init(title: String, xLabel: String, yLabel: String, series: [Series], logY: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.logY = logY
    }

    static let styles: [(color: String, dash: String, marker: Marker)] = [
        ("#1b1b1b", "", .circle), ("#0072b2", "6 3", .square), ("#d55e00", "2 3", .triangle),
        ("#009e73", "8 3 2 3", .diamond), ("#cc79a7", "1 2", .circle), ("#777777", "10 4", .square),
    ]

    enum Marker { case circle, square, triangle, diamond }

    // Plot area inside the SVG.
    var left: Double { 70 }
    var right: Double { width - 20 }
    var top: Double { 36 }
    var bottom: Double { height - 70 }

    /// The SVG element.
    public func svg() -> String {
        let finite = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"\(fmt(width))\" "
            + "height=\"\(fmt(height))\" viewBox=\"0 0 \(fmt(width)) \(fmt(height))\" role=\"img\" "
            + "aria-label=\"\(escape(title))\">"
        out += "<text x=\"\(fmt(width / 2))\" y=\"20\" text-anchor=\"middle\" class=\"title\">\(escape(title))</text>"
        guard let xr = range(finite.map(\.x) + markers.map(\.x)), let yr = range(finite.map(\.y)) else {
            out += "<text x=\"\(fmt(width / 2))\" y=\"\(fmt(height / 2))\" text-anchor=\"middle\" "
                + "class=\"empty\">no data</text>"
            return out + "</svg>"
        }
        let axis = Axis(xMin: xr.lowerBound, xMax: xr.upperBound, yMin: yr.lowerBound, yMax: yr.upperBound, logY: logY,
                        left: left, right: right, top: top, bottom: bottom)
        let xs = xTicks.map { $0.filter { xr.contains($0) } }
            ?? Axis.ticks(xr.lowerBound, xr.upperBound, integer: integerX)
        out += axis.svgGroupOpen()
        out += axis.gridAndTicks(xTicks: xs, xLabel: xLabel, yLabel: yLabel)
        for (x, label) in markers where x.isFinite {
            let px = axis.px(x)
            out += "<line class=\"marker\" x1=\"\(fmt(px))\" y1=\"\(fmt(top))\" x2=\"\(fmt(px))\" "
                + "y2=\"\(fmt(bottom))\" stroke=\"#555\" stroke-dasharray=\"4 4\"/>"
            out += "<text x=\"\(fmt(px + 4))\" y=\"\(fmt(top + 12))\" class=\"small\">\(escape(label))</text>"
        }
        for (i, s) in series.enumerated() { out += draw(s, style: Self.styles[i % Self.styles.count], axis: axis) }
        out += "</g>" + legend()
        return out + "</svg>"
    }

    /// Lines through consecutive finite points (a NaN or inf breaks the line), markers when sparse.
    func draw(_ s: Series, style: (color: String, dash: String, marker: Marker), axis: Axis) -> String {
        var out = "<g class=\"series\" data-series=\"\(escape(s.label))\">"
        let usable = s.points.map { p in p.x.isFinite && p.y.isFinite && (!logY || p.y > 0) ? p : nil }
        if !s.markersOnly {
            var run: [(x: Double, y: Double)] = []
            for p in usable + [nil] {
                if let p { run.append(p); continue }
                if run.count > 1 {
                    let pts = run.map { "\(fmt(axis.px($0.x))),\(fmt(axis.py($0.y)))" }.joined(separator: " ")
                    out += "<polyline fill=\"none\" stroke=\"\(style.color)\" stroke-width=\"1.6\" "
                        + (style.dash.isEmpty ? "" : "stroke-dasharray=\"\(style.dash)\" ") + "points=\"\(pts)\"/>"
                }
                run = []
            }
        }
        let present = usable.compactMap { $0 }
        if s.markersOnly || present.count <= 40 {
            for p in present { out += marker(style.marker, x: axis.px(p.x), y: axis.py(p.y), color: style.color) }
        }
        return out + "</g>"
    }

    func marker(_ m: Marker, x: Double, y: Double, color: String) -> String {
        let r = 3.5
        switch m {
        case .circle:
            return "<circle class=\"point\" cx=\"\(fmt(x))\" cy=\"\(fmt(y))\" r=\"\(fmt(r))\" fill=\"\(color)\"/>"
        case .square:
            return "<rect class=\"point\" x=\"\(fmt(x - r))\" y=\"\(fmt(y - r))\" width=\"\(fmt(2 * r))\" "
                + "height=\"\(fmt(2 * r))\" fill=\"white\" stroke=\"\(color)\" stroke-width=\"1.5\"/>"
        case .triangle:
            return "<path class=\"point\" d=\"M\(fmt(x)) \(fmt(y - r - 1)) L\(fmt(x + r + 1)) \(fmt(y + r)) "
                + "L\(fmt(x - r - 1)) \(fmt(y + r)) Z\" fill=\"\(color)\"/>"
        case .diamond:
            return "<path class=\"point\" d=\"M\(fmt(x)) \(fmt(y - r - 1)) L\(fmt(x + r + 1)) \(fmt(y)) L\(fmt(x)) "
                + "\(fmt(y + r + 1)) L\(fmt(x - r - 1)) \(fmt(y)) Z\" "
                + "fill=\"white\" stroke=\"\(color)\" stroke-width=\"1.5\"/>"
        }
    }

    func legend() -> String {
        var out = "<g class=\"legend\">"
        var x = left, y = height - 18
        for (i, s) in series.enumerated() where !s.points.isEmpty {
            let style = Self.styles[i % Self.styles.count]
            let w = 40 + Double(s.label.count) * 6.5
            if x + w > width - 10 && x > left { x = left; y += 16 }
            if !s.markersOnly {
                out += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(y - 4))\" x2=\"\(fmt(x + 24))\" y2=\"\(fmt(y - 4))\" "
                    + "stroke=\"\(style.color)\" stroke-width=\"1.6\""
                    + (style.dash.isEmpty ? "" : " stroke-dasharray=\"\(style.dash)\"") + "/>"
            }
            out += marker(style.marker, x: x + 12, y: y - 4, color: style.color)
            out += "<text x=\"\(fmt(x + 30))\" y=\"\(fmt(y))\" class=\"small\">\(escape(s.label))</text>"
            x += w
        }
        return out + "</g>"
    }

    /// The data range with a little room, or nil without finite data.
    func range(_ values: [Double]) -> ClosedRange<Double>? {
        let v = values.filter(\.isFinite)
        guard var lo = v.min(), var hi = v.max() else { return nil }
        if lo == hi {
            let pad = lo == 0 ? 1 : abs(lo) * 0.1
            lo -= logY ? 0 : pad; hi += pad
            if logY { lo /= 1.5; hi *= 1.5 }
        }
        return lo...hi
    }
}

/// Data ↔ pixel mapping of a plot area, with "nice" ticks (1, 2, 5 × 10^k).
struct Axis {
    let xMin, xMax, yMin, yMax: Double
    let logY: Bool
    let left, right, top, bottom: Double

    func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * (right - left) }
    func py(_ y: Double) -> Double {
        let t = logY ? (log10(y) - log10(yMin)) / (log10(yMax) - log10(yMin)) : (y - yMin) / (yMax - yMin)
        return bottom - t * (bottom - top)
    }

    func svgGroupOpen() -> String {
        "<g class=\"plot\" data-x-min=\"\(xMin)\" data-x-max=\"\(xMax)\" data-y-min=\"\(yMin)\" data-y-max=\"\(yMax)\" "
            + "data-left=\"\(left)\" data-right=\"\(right)\" data-top=\"\(top)\" data-bottom=\"\(bottom)\" "
            + "data-log-y=\"\(logY)\">"
    }

    func gridAndTicks(xTicks: [Double], xLabel: String, yLabel: String) -> String {
        var out = "<rect x=\"\(fmt(left))\" y=\"\(fmt(top))\" width=\"\(fmt(right - left))\" "
            + "height=\"\(fmt(bottom - top))\" fill=\"none\" stroke=\"#999\"/>"
        for (x, text) in zip(xTicks, Self.labels(xTicks)) {
            let p = px(x)
            out += "<line x1=\"\(fmt(p))\" y1=\"\(fmt(bottom))\" x2=\"\(fmt(p))\" y2=\"\(fmt(bottom + 5))\" "
                + "stroke=\"#333\"/>"
            out += "<text x=\"\(fmt(p))\" y=\"\(fmt(bottom + 18))\" text-anchor=\"middle\" "
                + "class=\"tick\">\(text)</text>"
        }
        let logTicks = logY ? Self.logTicks(yMin, yMax) : []
        let yTicks = logTicks.count >= 3 ? logTicks : Self.ticks(yMin, yMax)
        for (y, text) in zip(yTicks, Self.labels(yTicks)) {
            let p = py(y)
            out += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(p))\" x2=\"\(fmt(right))\" y2=\"\(fmt(p))\" "
                + "stroke=\"#e4e4e4\"/>"
            out += "<line x1=\"\(fmt(left - 5))\" y1=\"\(fmt(p))\" x2=\"\(fmt(left))\" y2=\"\(fmt(p))\" "
                + "stroke=\"#333\"/>"
            out += "<text x=\"\(fmt(left - 8))\" y=\"\(fmt(p + 4))\" text-anchor=\"end\" "
                + "class=\"tick\">\(text)</text>"
        }
        out += "<text x=\"\(fmt((left + right) / 2))\" y=\"\(fmt(bottom + 36))\" text-anchor=\"middle\" class=\"axis\">"
            + "\(escape(xLabel))</text>"
        out += "<text transform=\"translate(16 \(fmt((top + bottom) / 2))) rotate(-90)\" text-anchor=\"middle\" "
            + "class=\"axis\">\(escape(yLabel))</text>"
        return out
    }

    /// About five round ticks inside [lo, hi] (whole numbers only when `integer`).
    static func ticks(_ lo: Double, _ hi: Double, integer: Bool = false) -> [Double] {
        guard hi > lo else { return [lo] }
        let raw = integer ? max((hi - lo) / 5, 1) : (hi - lo) / 5, mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var out: [Double] = []
        var t = ceil(lo / step) * step
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    /// 1, 2, 5 × 10^k inside [lo, hi] (all of them when the range is under two decades).
    static func logTicks(_ lo: Double, _ hi: Double) -> [Double] {
        guard lo > 0, hi > lo else { return [lo] }
        var out: [Double] = []
        for k in Int(floor(log10(lo)))...Int(ceil(log10(hi))) {
            for m in [1.0, 2, 5] where (m * pow(10, Double(k))) >= lo && (m * pow(10, Double(k))) <= hi {
                out.append(m * pow(10, Double(k)))
            }
        }
        return out.isEmpty ? [lo, hi] : out
    }

    /// Tick labels with as many significant digits as it takes to tell the ticks apart (three at least): a
    /// peak memory that moved by a few MiB gets 3.0702, 3.0704 … rather than 3.07 three times.
    static func labels(_ ticks: [Double]) -> [String] {
        for digits in 3...16 {
            let out = ticks.map { label($0, digits: digits) }
            if Set(out).count == Set(ticks).count { return out }
        }
        return ticks.map { label($0, digits: 17) }
    }

    static func label(_ v: Double, digits: Int) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(format: "%.0f", v) }
        return String(format: "%.\(digits)g", v)
    }
}

func fmt(_ v: Double) -> String { String(format: "%.2f", v) }

/// Text and attribute values with XML's five special characters escaped.
public func escape(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&apos;"
        default: out.append(c)
        }
    }
    return out
}
