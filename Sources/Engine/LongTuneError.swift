/// The project's one error type: a message for the user that names the file, the field or option and the fix
/// (docs/CONVENTIONS.md). Every target throws it; the command-line tool prints it and exits non-zero.
public struct LongTuneError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
