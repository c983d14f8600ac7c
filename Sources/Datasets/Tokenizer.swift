import Engine
import Foundation

/// A tokenizer.json (Hugging Face `tokenizers`) with a BPE model: byte-level BPE as in GPT-2,
/// Llama 3 and SmolLM2 (pre-tokenizers ByteLevel, Split, Digits, Sequence), and SentencePiece-style
/// BPE with byte fallback as in Llama 2 (normalizers Prepend/Replace, or a Metaspace pre-tokenizer).
/// Added tokens are matched whole in the text first, as `tokenizers` does.
public final class Tokenizer {
    let vocab: [String: Int32]
    let ranks: [Pair: Int]
    let byteLevel: Bool
    let byteFallback: Bool
    let unkId: Int32?
    let preSteps: [PreStep]
    let normalizers: [Normal]
    let added: [(String, Int32)]          // longest first
    public let eosTokenId: Int32?
    /// The special token `tokenizers` puts before a text when it adds special tokens (a
    /// TemplateProcessing post-processor that starts with one, as Llama 2 and 3 have); nil if none.
    public let bosPrefix: Int32?
    public let vocabSize: Int
    private var cache: [String: [Int32]] = [:]

    struct Pair: Hashable { let a: String; let b: String }
    enum PreStep {
        case split(NSRegularExpression, isolated: Bool), byteLevel(regex: NSRegularExpression?),
             digits(individual: Bool), metaspace(replacement: String, prepend: Bool)
    }
    enum Normal { case prepend(String), replace(String, String) }

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    /// GPT-2's byte → printable character map and its inverse.
    public static let byteToChar: [Character] = {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) { bs.append(b); cs.append(256 + n); n += 1 }
        var table = [Character](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Character(Unicode.Scalar(UInt32(c))!) }
        return table
    }()

    /// Loads `DIR/tokenizer.json` or the file itself.
    public convenience init(path: String) throws {
        var url = URL(fileURLWithPath: path)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            url = url.appendingPathComponent("tokenizer.json")
        }
        guard let data = try? Data(contentsOf: url) else {
            throw LongTuneError("\(url.path): cannot read tokenizer.json; put the model's tokenizer.json there "
                                + "(import-gguf writes one from the GGUF metadata)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LongTuneError("\(url.path): not valid JSON")
        }
        try self.init(json: json, source: url.path, directory: url.deletingLastPathComponent())
    }

    init(json: [String: Any], source: String, directory: URL) throws {
        func fail(_ what: String) -> LongTuneError { LongTuneError("\(source): \(what)") }
        guard let model = json["model"] as? [String: Any], (model["type"] as? String ?? "BPE") == "BPE",
              let v = model["vocab"] as? [String: Int] else {
            throw fail("model must be BPE with a vocab (Unigram/WordPiece tokenizers are not supported)")
        }
        if let (token, id) = v.first(where: { !(0...Int(Int32.max)).contains($0.value) }) {
            throw fail("model.vocab: token \(token.debugDescription) has id \(id), outside 0...\(Int32.max)")
        }
        vocab = v.mapValues { Int32($0) }
        var r: [Pair: Int] = [:]
        for (i, m) in (model["merges"] as? [Any] ?? []).enumerated() {
            if let s = m as? String {
                let parts = s.split(separator: " ", maxSplits: 1).map(String.init)
                if parts.count == 2 { r[Pair(a: parts[0], b: parts[1])] = i }
            } else if let p = m as? [String], p.count == 2 { r[Pair(a: p[0], b: p[1])] = i }
        }
        ranks = r
        byteFallback = model["byte_fallback"] as? Bool ?? false
        unkId = (model["unk_token"] as? String).flatMap { v[$0] }.map { Int32($0) }

        func compile(_ p: String) throws -> NSRegularExpression {
            do { return try NSRegularExpression(pattern: p) } catch {
                throw fail("pre-tokenizer regex does not compile: \(p)")
            }
        }
        var steps: [PreStep] = []
        var usesByteLevel = false
        func pre(_ node: [String: Any]) throws {
            switch node["type"] as? String {
            case "ByteLevel":
                usesByteLevel = true
                steps.append(.byteLevel(
                    regex: (node["use_regex"] as? Bool ?? true) ? try compile(Self.gpt2Pattern) : nil))
            case "Split":
                let pat = node["pattern"] as? [String: Any]
                let regex = try (pat?["Regex"] as? String).map(compile)
                    ?? compile(NSRegularExpression.escapedPattern(for: pat?["String"] as? String ?? " "))
                guard (node["behavior"] as? String ?? "Isolated") == "Isolated",
                      !(node["invert"] as? Bool ?? false) else {
                    throw fail("Split pre-tokenizer: only behavior Isolated without invert is supported")
                }
                steps.append(.split(regex, isolated: true))
            case "Digits": steps.append(.digits(individual: node["individual_digits"] as? Bool ?? false))
            case "Metaspace":
                steps.append(.metaspace(replacement: node["replacement"] as? String ?? "▁",
                                        prepend: (node["prepend_scheme"] as? String ?? "always") != "never"))
            case "Sequence": for p in node["pretokenizers"] as? [[String: Any]] ?? [] { try pre(p) }
            case let t: throw fail("pre-tokenizer \(t ?? "?") is not supported "
                                   + "(ByteLevel, Split, Digits, Metaspace, Sequence are)")
            }
        }
        if let p = json["pre_tokenizer"] as? [String: Any] { try pre(p) }
        preSteps = steps
        byteLevel = usesByteLevel
        var norms: [Normal] = []
        func norm(_ node: [String: Any]) throws {
            switch node["type"] as? String {
            case "Prepend": norms.append(.prepend(node["prepend"] as? String ?? "▁"))
            case "Replace":
                let pat = (node["pattern"] as? [String: Any])?["String"] as? String ?? " "
                norms.append(.replace(pat, node["content"] as? String ?? "▁"))
            case "Sequence": for n in node["normalizers"] as? [[String: Any]] ?? [] { try norm(n) }
            case "NFC": break   // text is read as Swift Strings, which compare canonically; pack writes NFC input as is
            case let t: throw fail("normalizer \(t ?? "?") is not supported (Prepend, Replace, Sequence are)")
            }
        }
        if let n = json["normalizer"] as? [String: Any] { try norm(n) }
        normalizers = norms
        let addedTokens = try (json["added_tokens"] as? [[String: Any]] ?? []).compactMap { t -> (String, Int32)? in
            guard let c = t["content"] as? String, let id = t["id"] as? Int else { return nil }
            guard let id32 = Int32(exactly: id), id32 >= 0 else {
                throw fail("added_tokens: \(c.debugDescription) has id \(id), outside 0...\(Int32.max)")
            }
            return (c, id32)
        }
        added = addedTokens.sorted { $0.0.count > $1.0.count }
        vocabSize = max(vocab.values.max().map { Int($0) + 1 } ?? 0, (addedTokens.map { Int($0.1) }.max() ?? -1) + 1)
        // EOS: tokenizer_config.json's eos_token, else a conventional name present in the vocabulary.
        var eos: Int32? = nil
        if let cfg = try? JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("tokenizer_config.json"))) as? [String: Any] {
            let name = (cfg["eos_token"] as? String) ?? ((cfg["eos_token"] as? [String: Any])?["content"] as? String)
            if let name { eos = addedTokens.first { $0.0 == name }?.1 ?? vocab[name] }
        }
        bosPrefix = Self.templatePrefix(json["post_processor"] as? [String: Any]).flatMap { name in
            addedTokens.first { $0.0 == name }?.1 ?? v[name].map { Int32($0) }
        }
        let v32 = vocab
        eosTokenId = eos ?? ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"].lazy.compactMap { n in
            addedTokens.first { $0.0 == n }?.1 ?? v32[n]
        }.first
    }

    /// The first special token of a TemplateProcessing post-processor's single-sequence template.
    static func templatePrefix(_ node: [String: Any]?) -> String? {
        guard let node else { return nil }
        if node["type"] as? String == "Sequence" {
            return (node["processors"] as? [[String: Any]] ?? []).lazy.compactMap { templatePrefix($0) }.first
        }
        guard node["type"] as? String == "TemplateProcessing",
              let first = (node["single"] as? [[String: Any]])?.first,
              let special = first["SpecialToken"] as? [String: Any] else { return nil }
        return special["id"] as? String
    }

    /// The text of `ids` (inverse of `encode` for byte-level and byte-fallback vocabularies):
    /// byte-level tokens map back through GPT-2's byte table, SentencePiece-style tokens turn the
    /// metaspace back into spaces (dropping the one a Prepend normalizer added) and <0xNN> into bytes.
    public func decode(_ ids: [Int32]) -> String {
        var text = String(decoding: bytes(ids), as: UTF8.self)
        if prependsSpace, text.hasPrefix(" ") { text.removeFirst() }
        return text
    }

    /// The UTF-8 bytes of `ids`, token after token (a token may hold part of a character; see
    /// `UTF8Stream`). Ids outside the vocabulary give nothing.
    public func bytes(_ ids: [Int32]) -> [UInt8] {
        var bytes: [UInt8] = []
        for id in ids {
            guard let piece = idToToken[id] else { continue }
            if byteFallback, piece.count == 6, piece.hasPrefix("<0x"), piece.hasSuffix(">"),
               let b = UInt8(piece.dropFirst(3).prefix(2), radix: 16) {
                bytes.append(b)
            } else if isAdded(id) {
                bytes += Array(piece.utf8)
            } else if byteLevel {
                for ch in piece {
                    if let b = Self.charToByte[ch] { bytes.append(b) } else { bytes += Array(String(ch).utf8) }
                }
            } else {
                bytes += Array(piece.replacingOccurrences(of: metaspace, with: " ").utf8)
            }
        }
        return bytes
    }

    /// Whether `id` is an added (special) token such as <|im_end|>.
    public func isAdded(_ id: Int32) -> Bool { addedIds.contains(id) }
    private lazy var addedIds = Set(added.map(\.1))

    /// The id of a token by its text (vocabulary or added tokens).
    public func id(of token: String) -> Int32? { added.first { $0.0 == token }?.1 ?? vocab[token] }

    private lazy var idToToken: [Int32: String] = {
        var m: [Int32: String] = [:]
        for (t, i) in vocab { m[i] = t }
        for (t, i) in added { m[i] = t }
        return m
    }()
    static let charToByte: [Character: UInt8] = {
        var m: [Character: UInt8] = [:]
        for (b, c) in byteToChar.enumerated() { m[c] = UInt8(b) }
        return m
    }()
    private var metaspace: String {
        for step in preSteps { if case .metaspace(let r, _) = step { return r } }
        for n in normalizers { if case .replace(_, let r) = n { return r } }
        return "▁"
    }
    private var prependsSpace: Bool {
        normalizers.contains { if case .prepend = $0 { return true } else { return false } }
            || preSteps.contains { if case .metaspace(_, let prepend) = $0 { return prepend } else { return false } }
    }

    /// Token ids of `text`, as `tokenizers`' `encode(text, add_special_tokens=False)`.
    public func encode(_ text: String) -> [Int32] {
        var out: [Int32] = []
        for (piece, special) in splitAdded(text) {
            if let special { out.append(special); continue }
            var s = piece
            for n in normalizers {
                switch n {
                case .prepend(let p): s = p + s
                case .replace(let a, let b): s = s.replacingOccurrences(of: a, with: b)
                }
            }
            for word in preTokenize(s) { out += bpe(word) }
        }
        return out
    }

    /// Splits around added tokens (longest match first, leftmost).
    func splitAdded(_ text: String) -> [(String, Int32?)] {
        guard !added.isEmpty else { return [(text, nil)] }
        var result: [(String, Int32?)] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var best: (Range<Substring.Index>, Int32)? = nil
            for (content, id) in added where !content.isEmpty {
                if let r = rest.range(of: content), best == nil || r.lowerBound < best!.0.lowerBound { best = (r, id) }
            }
            guard let (r, id) = best else { result.append((String(rest), nil)); break }
            if r.lowerBound > rest.startIndex { result.append((String(rest[..<r.lowerBound]), nil)) }
            result.append(("", id))
            rest = rest[r.upperBound...]
        }
        return result
    }

    func preTokenize(_ s: String) -> [String] {
        var pieces = [s]
        for step in preSteps {
            switch step {
            case .split(let re, _): pieces = pieces.flatMap { Self.isolate($0, re) }
            case .digits(let individual):
                let re = try! NSRegularExpression(pattern: individual ? #"\p{N}"# : #"\p{N}+"#)
                pieces = pieces.flatMap { Self.isolate($0, re) }
            case .byteLevel(let re):
                if let re { pieces = pieces.flatMap { Self.isolate($0, re) } }
                pieces = pieces.map { String($0.utf8.map { Self.byteToChar[Int($0)] }) }
            case .metaspace(let rep, let prepend):
                let joined = pieces.joined().replacingOccurrences(of: " ", with: rep)
                let text = prepend && !joined.hasPrefix(rep) ? rep + joined : joined
                // Split before each replacement character, keeping it with the following word.
                var out: [String] = []; var cur = ""
                for ch in text {
                    if String(ch) == rep && !cur.isEmpty { out.append(cur); cur = "" }
                    cur.append(ch)
                }
                if !cur.isEmpty { out.append(cur) }
                pieces = out
            }
        }
        return pieces.filter { !$0.isEmpty }
    }

    /// Matches become their own pieces; the text between them too.
    static func isolate(_ s: String, _ re: NSRegularExpression) -> [String] {
        let ns = s as NSString
        var out: [String] = []
        var last = 0
        for m in re.matches(in: s, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
            if m.range.location > last {
                out.append(ns.substring(with: NSRange(location: last, length: m.range.location - last)))
            }
            out.append(ns.substring(with: m.range))
            last = m.range.location + m.range.length
        }
        if last < ns.length { out.append(ns.substring(from: last)) }
        return out
    }

    /// Byte-pair merges by rank, lowest first, over the characters of one pre-token.
    func bpe(_ word: String) -> [Int32] {
        if let c = cache[word] { return c }
        var symbols = word.unicodeScalars.map { String($0) }   // scalars, not graphemes ("\r\n" is two symbols)
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)? = nil
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[Pair(a: symbols[i], b: symbols[i + 1])], best == nil || r < best!.rank {
                    best = (r, i)
                }
            }
            guard let b = best else { break }
            let pair = Pair(a: symbols[b.index], b: symbols[b.index + 1])
            var merged: [String] = []
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == pair.a && symbols[i + 1] == pair.b {
                    merged.append(pair.a + pair.b); i += 2
                } else { merged.append(symbols[i]); i += 1 }
            }
            symbols = merged
        }
        var ids: [Int32] = []
        for s in symbols {
            if let id = vocab[s] { ids.append(id); continue }
            if byteFallback {
                for byte in s.utf8 { if let id = vocab[String(format: "<0x%02X>", byte)] { ids.append(id) } }
            } else if let unkId { ids.append(unkId) }
        }
        if cache.count < 100_000 { cache[word] = ids }
        return ids
    }
}
