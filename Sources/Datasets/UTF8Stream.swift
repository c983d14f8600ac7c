/// Turns bytes that arrive token by token into text as soon as it is whole: a character split
/// across tokens (byte-level and byte-fallback vocabularies split emoji and CJK into byte tokens) is
/// held back until its last byte arrives. Invalid bytes become U+FFFD, as `String(decoding:)` does.
public struct UTF8Stream {
    private var pending: [UInt8] = []

    public init() {}

    /// The text completed by `bytes`.
    public mutating func push(_ bytes: [UInt8]) -> String {
        pending += bytes
        let whole = pending.count - Self.incompleteTail(pending)
        let text = String(decoding: pending[..<whole], as: UTF8.self)
        pending.removeFirst(whole)
        return text
    }

    /// Whatever is still held back (an unfinished character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }

    /// How many bytes at the end start a character whose remaining bytes have not arrived yet.
    static func incompleteTail(_ b: [UInt8]) -> Int {
        // A lead byte within the last three bytes announcing more bytes than follow it.
        guard !b.isEmpty else { return 0 }   // a token without bytes (an id the tokenizer does not have)
        for back in 1...min(3, b.count) {
            let byte = b[b.count - back]
            if byte & 0xC0 == 0x80 { continue }   // continuation byte: keep looking for the lead
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > back ? back : 0
        }
        return 0
    }
}
