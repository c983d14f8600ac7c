import Foundation

/// A map of scores by context length (across) and a second variable (down): the passkey's depth, or RULER's task.
/// Each cell is shaded by its score on one light-to-dark scale (readable in grey print) and labelled.
public struct HeatMap {
    public struct Cell {
        public var column: Double, row: Double
        public var score: Double           // 0…1; NaN: no data
        public var text: String            // the cell's label, e.g. "4/5" or "87.5"
        public var data: [(name: String, value: String)]   // data-* attributes that map it back to its source
        public init(column: Double, row: Double, score: Double, text: String, data: [(name: String, value: String)]) {
            self.column = column; self.row = row; self.score = score; self.text = text; self.data = data
        }

        /// A passkey cell: retrieved of trials keys at one depth.
        public init(context: Double, depth: Double, retrieved: Int, trials: Int) {
            self.init(column: context, row: depth, score: trials > 0 ? Double(retrieved) / Double(trials) : .nan,
                      text: "\(retrieved)/\(trials)",
                      data: [("context", HeatMap.label(context)), ("depth", "\(depth)"), ("retrieved", "\(retrieved)"),
                             ("trials", "\(trials)")])
        }
    }

    public var title: String
    public var cells: [Cell]
    public var rowAxis = "depth of the key (0 = start)"
    public var rowLabel: (Double) -> String = { String(format: "%.2f", $0) }
    public var scaleUnit = "retrieved"
    public var rowLabelWidth = 84.0
    /// Rows from this one down are drawn a gap lower (RULER's average under its tasks); nil: no gap.
    public var gapBeforeRow: Double?

    public init(title: String, cells: [Cell]) {
        self.title = title
        self.cells = cells
    }

    /// Accuracy 0 → #f2f2f2, 1 → #08306b, linearly in RGB.
    /// A context length as text: whole when it is one (an evaluation file may hold anything).
    static func label(_ x: Double) -> String { Int(exactly: x).map(String.init) ?? String(x) }

    static func shade(_ a: Double) -> String {
        guard a.isFinite else { return "#ffffff" }
        let lo = (242.0, 242.0, 242.0), hi = (8.0, 48.0, 107.0)
        func mix(_ l: Double, _ h: Double) -> Int { Int((l + (h - l) * min(max(a, 0), 1)).rounded()) }
        return String(format: "#%02x%02x%02x", mix(lo.0, hi.0), mix(lo.1, hi.1), mix(lo.2, hi.2))
    }

    public func svg() -> String {
        let columns = Array(Set(cells.map(\.column))).sorted(), rows = Array(Set(cells.map(\.row))).sorted()
        let cw = 84.0, ch = 30.0, left = rowLabelWidth, top = 40.0, gap = gapBeforeRow == nil ? 0.0 : 8
        func rowY(_ i: Int) -> Double {
            top + Double(i) * ch + (gapBeforeRow.map { rows[i] >= $0 } ?? false ? gap : 0)
        }
        let width = left + cw * Double(max(columns.count, 1)) + 150
        let height = top + ch * Double(max(rows.count, 1)) + gap + 56
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"\(fmt(width))\" "
            + "height=\"\(fmt(height))\" viewBox=\"0 0 \(fmt(width)) \(fmt(height))\" role=\"img\" "
            + "aria-label=\"\(escape(title))\">"
        out += "<text x=\"\(fmt(width / 2))\" y=\"20\" text-anchor=\"middle\" class=\"title\">\(escape(title))</text>"
        guard !cells.isEmpty else {
            return out + "<text x=\"\(fmt(width / 2))\" y=\"\(fmt(height / 2))\" text-anchor=\"middle\">"
                + "no data</text></svg>"
        }
        for cell in cells {
            guard let ci = columns.firstIndex(of: cell.column), let ri = rows.firstIndex(of: cell.row) else { continue }
            let x = left + Double(ci) * cw, y = rowY(ri)
            let data = cell.data.map { "data-\($0.name)=\"\(escape($0.value))\" " }.joined()
            out += "<rect class=\"cell\" \(data)x=\"\(fmt(x))\" y=\"\(fmt(y))\" "
                + "width=\"\(fmt(cw))\" height=\"\(fmt(ch))\" fill=\"\(Self.shade(cell.score))\" stroke=\"white\"/>"
            let ink = cell.score > 0.5 ? "white" : "#1b1b1b"   // a style, so the page's text colour does not win
            out += "<text x=\"\(fmt(x + cw / 2))\" y=\"\(fmt(y + ch / 2 + 4))\" text-anchor=\"middle\" class=\"small\" "
                + "style=\"fill: \(ink)\">\(escape(cell.text))</text>"
        }
        for (i, c) in columns.enumerated() {
            let y = top + ch * Double(rows.count) + gap + 18
            out += "<text x=\"\(fmt(left + (Double(i) + 0.5) * cw))\" y=\"\(fmt(y))\" "
                + "text-anchor=\"middle\" class=\"tick\">\(Self.label(c))</text>"
        }
        for (i, r) in rows.enumerated() {
            out += "<text x=\"\(fmt(left - 8))\" y=\"\(fmt(rowY(i) + 0.5 * ch + 4))\" text-anchor=\"end\" "
                + "class=\"tick\">\(escape(rowLabel(r)))</text>"
        }
        let bottom = top + ch * Double(rows.count) + gap
        out += "<text x=\"\(fmt(left + cw * Double(columns.count) / 2))\" y=\"\(fmt(bottom + 38))\" "
            + "text-anchor=\"middle\" class=\"axis\">context length (tokens)</text>"
        out += "<text transform=\"translate(16 \(fmt((top + bottom) / 2))) rotate(-90)\" text-anchor=\"middle\" "
            + "class=\"axis\">\(escape(rowAxis))</text>"
        // Colour scale.
        let sx = left + cw * Double(columns.count) + 24
        for (i, a) in [0.0, 0.25, 0.5, 0.75, 1.0].enumerated() {
            let y = top + Double(i) * 18
            out += "<rect x=\"\(fmt(sx))\" y=\"\(fmt(y))\" width=\"16\" height=\"16\" "
                + "fill=\"\(Self.shade(a))\" stroke=\"#999\"/>"
            out += "<text x=\"\(fmt(sx + 22))\" y=\"\(fmt(y + 12))\" class=\"small\">\(Int(a * 100))% \(scaleUnit)</text>"
        }
        return out + "</svg>"
    }
}
