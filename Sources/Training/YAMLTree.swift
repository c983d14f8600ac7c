import Engine
import Foundation
import Yams

/// A YAML document as plain values (String, Int, Double, Bool, NSNull, [Any], [String: Any]), built
/// from Yams' node tree rather than its `load` constructor, which traps on some malformed documents
/// (the recipe fuzzer found complex and repeated keys). Keys must be plain text, each once.
enum YAMLTree {
    static func load(_ text: String, source: String) throws -> Any? {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch { throw LongTuneError("\(source): malformed YAML: \(error)") }
        return try node.map { try value($0, path: "", source: source) }
    }

    static func value(_ node: Node, path: String, source: String) throws -> Any {
        let at = path.isEmpty ? "the document" : path
        switch node {
        case .scalar(let scalar):
            switch String(describing: node.tag) {
            case Tag.Name.null.rawValue: return NSNull()
            case Tag.Name.bool.rawValue: if let b = node.bool { return b }
            case Tag.Name.int.rawValue: if let i = node.int { return i } else if let f = node.float { return f }
            case Tag.Name.float.rawValue: if let f = node.float { return f }
            default: break
            }
            return scalar.string
        case .mapping(let mapping):
            var out: [String: Any] = [:]
            for (key, child) in mapping {
                guard case .scalar(let k) = key else {
                    let line = key.mark.map { " (line \($0.line))" } ?? ""
                    throw LongTuneError("\(source): \(at): keys must be plain names, not a list or mapping\(line)")
                }
                let childPath = path.isEmpty ? k.string : "\(path).\(k.string)"
                guard out[k.string] == nil else { throw LongTuneError("\(source): \(childPath) is given twice") }
                out[k.string] = try value(child, path: childPath, source: source)
            }
            return out
        case .sequence(let sequence):
            return try sequence.map { try value($0, path: path, source: source) }
        case .alias:
            throw LongTuneError("\(source): \(at): YAML aliases are not supported in recipes; write the value out")
        }
    }
}
