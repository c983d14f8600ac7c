/// A setting of a documented configuration section (a recipe knob): the value and its one-line
/// meaning, declared together as `@Knob("what it does") public var rank = 8`.
///
/// The declaration is the single source of truth: a section's accepted keys, their types, their
/// defaults (the initial values) and their meanings are read back from a default instance by
/// reflection (`KnobSection`), which is how unknown keys are rejected, missing keys filled and
/// `longtune recipe explain` printed. Encoded and decoded as the bare value.
@propertyWrapper
public struct Knob<Value: Codable & Equatable>: Codable, Equatable {
    public var wrappedValue: Value
    /// One line: what the knob does, with its unit where it has one.
    public let meaning: String
    /// A required knob has no usable default; a recipe must set it.
    public let required: Bool

    public init(wrappedValue: Value, _ meaning: String, required: Bool = false) {
        self.wrappedValue = wrappedValue
        self.meaning = meaning
        self.required = required
    }

    public init(from decoder: Decoder) throws {
        wrappedValue = try Value(from: decoder)
        meaning = ""
        required = false
    }

    public func encode(to encoder: Encoder) throws { try wrappedValue.encode(to: encoder) }

    /// Knobs compare by value; the meaning is documentation.
    public static func == (a: Knob, b: Knob) -> Bool { a.wrappedValue == b.wrappedValue }
}

/// A closed set of string values (a Codable enum) that decodes with an error listing the choices.
public protocol KnobChoice: RawRepresentable, CaseIterable, Codable, Equatable where RawValue == String {}

extension KnobChoice {
    public init(from decoder: Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                "\"\(raw)\" is not one of \(Self.choices)"))
        }
        self = value
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }

    /// The choices as the documentation writes them: `a | b | c`.
    public static var choices: String { allCases.map(\.rawValue).joined(separator: " | ") }
}

/// What reflection sees of a knob, whatever its value type.
public protocol KnobDescription {
    var meaning: String { get }
    var required: Bool { get }
    var defaultValue: Any { get }
    var typeDescription: String { get }
    /// The declared value type (`Int`, `Double?`, …).
    var valueType: Any.Type { get }
}

extension Knob: KnobDescription {
    public var defaultValue: Any { wrappedValue }
    public var typeDescription: String { describeType(Value.self) }
    public var valueType: Any.Type { Value.self }
}

/// A type as a recipe writer reads it.
func describeType(_ t: Any.Type) -> String {
    switch t {
    case is Int.Type, is UInt64.Type: return "integer"
    case is Double.Type: return "number"
    case is Bool.Type: return "true | false"
    case is String.Type: return "string"
    case let choice as any KnobChoice.Type: return choice.choices
    case let optional as any OptionalKnobValue.Type: return describeType(optional.wrapped) + " (optional)"
    case let list as any ListKnobValue.Type: return "list of " + describeType(list.element)
    case let described as any KnobValueDescribed.Type: return described.knobTypeDescription
    default: return "mapping (\(t))"
    }
}

/// A knob value type that says how a recipe writes it (e.g. a mapping with named fields).
public protocol KnobValueDescribed { static var knobTypeDescription: String { get } }

protocol OptionalKnobValue { static var wrapped: Any.Type { get } }
extension Optional: OptionalKnobValue { static var wrapped: Any.Type { Wrapped.self } }
protocol ListKnobValue { static var element: Any.Type { get } }
extension Array: ListKnobValue { static var element: Any.Type { Element.self } }

/// A section of knobs, with a default instance to read them from.
public protocol KnobSection: Codable, Equatable {
    init()
}

extension KnobSection {
    /// (key, knob) in declaration order.
    public static var knobs: [(key: String, knob: KnobDescription)] {
        Mirror(reflecting: Self()).children.compactMap { child in
            guard let label = child.label, label.hasPrefix("_"),
                  let knob = child.value as? KnobDescription else { return nil }
            return (String(label.dropFirst()), knob)
        }
    }

    /// The one-line meaning of `key` (command-line options that mirror a knob quote it).
    public static func meaning(of key: String) -> String {
        knobs.first { $0.key == key }?.knob.meaning ?? ""
    }

    /// The keys a section accepts.
    public static var keys: [String] { knobs.map(\.key) }

    /// True when some knob must be set (the section cannot be left out).
    public static var isRequired: Bool { knobs.contains { $0.knob.required } }
}

extension Knob: Sendable where Value: Sendable {}
