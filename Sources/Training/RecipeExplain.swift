import Engine
import Foundation
import Llama
import Settings

extension Recipe {
    /// Every key of every section: `section.key: value  (type)` and its meaning on the next line.
    /// Values are the defaults, or `values`' own when given.
    public static func explain(values: Recipe? = nil) -> String {
        var lines: [String] = []
        let given = values.map { Mirror(reflecting: $0).children.map(\.value) }
        for (i, (name, defaults)) in sections.enumerated() {
            lines.append("\(name):")
            let current = given.map { Self.knobValues(of: $0[i]) }
            for (key, knob) in type(of: defaults).knobs {
                let value = current?[key].map(render) ?? (knob.required ? "(required)" : render(knob.defaultValue))
                lines.append("  \(name).\(key): \(value)    (\(knob.typeDescription))")
                lines.append("      \(knob.meaning)")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// A section's knob values by key.
    static func knobValues(of section: Any) -> [String: Any] {
        var out: [String: Any] = [:]
        for child in Mirror(reflecting: section).children {
            guard let label = child.label, label.hasPrefix("_"),
                  let knob = child.value as? KnobDescription else { continue }
            out[String(label.dropFirst())] = knob.defaultValue
        }
        return out
    }

    /// A value as a recipe would write it.
    static func render(_ v: Any) -> String {
        let mirror = Mirror(reflecting: v)
        if mirror.displayStyle == .optional { return mirror.children.first.map { render($0.value) } ?? "unset" }
        switch v {
        case let choice as any KnobChoice: return choice.rawValue
        case let list as [Any]: return "[" + list.map(render).joined(separator: ", ") + "]"
        case let scaling as RopeScaling:
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            return (try? String(decoding: enc.encode(scaling), as: UTF8.self)) ?? "\(scaling)"
        case let s as String: return s.isEmpty ? "\"\"" : s
        default: return "\(v)"
        }
    }
}
