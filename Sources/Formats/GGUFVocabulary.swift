import Datasets
import Engine
import Foundation

/// The `tokenizer.*` metadata of a GGUF file, built from a Hugging Face directory's tokenizer.json,
/// tokenizer_config.json and config.json the way llama.cpp's convert_hf_to_gguf.py builds it for byte-level BPE
/// vocabularies (SmolLM2, Llama 3, Qwen2): tokens in id order with their types, merges, the pre-tokenizer named
/// by the hash of a fixed text's token ids, special token ids, the add-BOS/EOS flags and the chat template
/// (docs/CONVENTIONS.md §20).
public enum GGUFVocabulary {
    /// llama.cpp's token types.
    enum TokenType: Int32 { case normal = 1, control = 3, userDefined = 4, unused = 5 }

    /// The text whose token ids name the pre-tokenizer (llama.cpp's convert_hf_to_gguf.py `chktxt`).
    public static let checkText = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u{200d}🌫️ "
        + "(multiple emojis concatenated) "
        + "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
        + "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
        + "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
        + "I've been 'told he's there, 'RE you "
        + "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"

    /// SHA-256 of `str(ids of checkText)` → llama.cpp's pre-tokenizer name, for the byte-level pre-tokenizers
    /// LongTune's tokenizer implements (hashes from convert_hf_to_gguf.py).
    static let preTokenizers: [String: String] = [
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
        "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    ]

    /// llama.cpp's pre-tokenizer name for a check-text hash, nil for one LongTune does not know.
    public static func preTokenizerName(hash: String) -> String? { preTokenizers[hash] }

    /// The special tokens convert_hf_to_gguf.py looks up, with their GGUF key names.
    static let specialKeys: [(hf: String, gguf: String)] = [
        ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"), ("sep", "seperator_token_id"),
        ("pad", "padding_token_id"), ("cls", "cls_token_id"), ("mask", "mask_token_id"),
    ]

    /// The metadata for the tokenizer in `dir`, for a model of `vocabSize` ids; `pre` names llama.cpp's
    /// pre-tokenizer instead of recognizing it (for a tokenizer whose hash LongTune does not know).
    public static func metadata(_ dir: URL, vocabSize: Int, pre: String? = nil) throws -> [(String, GGUFValue)] {
        let tokenizerPath = dir.appendingPathComponent("tokenizer.json").path
        let json = try readJSON(dir.appendingPathComponent("tokenizer.json"), required: true)
        guard let model = json["model"] as? [String: Any], model["type"] as? String == "BPE",
              let vocab = model["vocab"] as? [String: Int],
              (json["pre_tokenizer"] as? [String: Any]).map(usesByteLevel) == true else {
            throw LongTuneError("\(tokenizerPath): export-gguf writes byte-level BPE vocabularies (SmolLM2, Llama 3, "
                                + "Qwen2); convert this tokenizer with llama.cpp's convert_hf_to_gguf.py")
        }
        let config = try readJSON(dir.appendingPathComponent("tokenizer_config.json"), required: false)
        let modelConfig = try readJSON(dir.appendingPathComponent("config.json"), required: false)
        let added = (json["added_tokens"] as? [[String: Any]] ?? []).compactMap { t -> (Int, String, Bool)? in
            guard let id = t["id"] as? Int, let content = t["content"] as? String else { return nil }
            return (id, content, t["special"] as? Bool ?? false)
        }
        var tokens = (0..<vocabSize).map { "[PAD\($0)]" }
        var types = [Int32](repeating: TokenType.unused.rawValue, count: vocabSize)
        for (token, id) in vocab where id < vocabSize { tokens[id] = token; types[id] = TokenType.normal.rawValue }
        for (id, content, special) in added where id < vocabSize {
            tokens[id] = content
            types[id] = (special || looksSpecial(content) ? TokenType.control : TokenType.userDefined).rawValue
        }
        if let id = (vocab.values.max()).flatMap({ $0 >= vocabSize ? $0 : nil }) {
            throw LongTuneError("\(tokenizerPath): token id \(id) is past the model's vocab_size \(vocabSize)")
        }
        var out: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string(try pre ?? preTokenizer(dir))),
            ("tokenizer.ggml.tokens", .strings(tokens)),
            ("tokenizer.ggml.token_type", .i32s(types)),
            ("tokenizer.ggml.merges", .strings(merges(model))),
        ]
        for (hf, key) in specialKeys {
            guard let id = specialId(hf, config: config, modelConfig: modelConfig, added: added, vocab: vocab),
                  id < vocabSize else { continue }
            out.append(("tokenizer.ggml." + key, .u32(UInt32(id))))
        }
        for (kind, add) in addsSpecialTokens(json, config: config) {
            out.append(("tokenizer.ggml.add_\(kind)_token", .bool(add)))
        }
        if let template = try chatTemplate(dir, config: config) {
            out.append(("tokenizer.chat_template", .string(template)))
        }
        return out
    }

    /// Whether encoding adds BOS and EOS, as convert_hf_to_gguf.py's SpecialVocab reads it: from the post-processor
    /// (ByteLevel adds neither; a TemplateProcessing adds the special tokens it starts or ends with), else from
    /// tokenizer_config.json's add_bos_token / add_eos_token.
    static func addsSpecialTokens(_ json: [String: Any], config: [String: Any]) -> [(String, Bool)] {
        var add: [String: Bool] = [:]
        func content(_ kind: String) -> String? {
            let e = config[kind + "_token"]
            return (e as? String) ?? ((e as? [String: Any])?["content"] as? String)
        }
        let post = json["post_processor"] as? [String: Any]
        for p in (post?["processors"] as? [[String: Any]]) ?? (post.map { [$0] } ?? []) {
            switch p["type"] as? String {
            case "ByteLevel":
                add["bos"] = add["bos"] ?? false
                add["eos"] = add["eos"] ?? false
            case "TemplateProcessing":
                let single = p["single"] as? [[String: Any]] ?? []
                guard single.count > 1 else { continue }
                func special(_ item: [String: Any]?) -> String? {
                    (item?["SpecialToken"] as? [String: Any])?["id"] as? String
                }
                if let first = special(single.first) { add["bos"] = first == content("bos") || first == content("cls") }
                if let last = special(single.last) { add["eos"] = last == content("eos") }
            default: continue
            }
        }
        for kind in ["bos", "eos"] where add[kind] == nil {
            if let v = config["add_\(kind)_token"] as? Bool { add[kind] = v }
        }
        return ["bos", "eos"].compactMap { k in add[k].map { (k, $0) } }
    }

    /// Whether a pre-tokenizer (or a Sequence holding one) is ByteLevel.
    static func usesByteLevel(_ node: [String: Any]) -> Bool {
        if node["type"] as? String == "ByteLevel" { return true }
        return (node["pretokenizers"] as? [[String: Any]] ?? []).contains(where: usesByteLevel)
    }

    /// Added tokens that some models forget to mark special (convert_hf_to_gguf.py's `does_token_look_special`).
    static func looksSpecial(_ t: String) -> Bool {
        ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(t) || (t.hasPrefix("<|") && t.hasSuffix("|>"))
            || (t.hasPrefix("<｜") && t.hasSuffix("｜>")) || (t.hasPrefix("<unused") && t.hasSuffix(">"))
    }

    /// The merges as "left right" strings (tokenizer.json stores strings or pairs).
    static func merges(_ model: [String: Any]) -> [String] {
        (model["merges"] as? [Any] ?? []).compactMap { m in
            if let s = m as? String { return s }
            if let p = m as? [String], p.count == 2 { return p[0] + " " + p[1] }
            return nil
        }
    }

    /// llama.cpp's name for the tokenizer's pre-tokenizer: the SHA-256 of the check text's ids, as Python prints the
    /// list.
    static func preTokenizer(_ dir: URL) throws -> String {
        let tokenizer = try Tokenizer(path: dir.path)
        let hash = checkHash((tokenizer.bosPrefix.map { [$0] } ?? []) + tokenizer.encode(checkText))
        guard let name = preTokenizerName(hash: hash) else {
            let file = dir.appendingPathComponent("tokenizer.json").path
            throw LongTuneError("\(file): its pre-tokenizer (hash \(hash)) "
                                + "is not one export-gguf knows "
                                + "(\(Set(preTokenizers.values).sorted().joined(separator: ", "))); "
                                + "name llama.cpp's pre-tokenizer with --tokenizer-pre NAME (see llama-vocab.cpp), or "
                                + "convert this model with llama.cpp's convert_hf_to_gguf.py")
        }
        return name
    }

    /// The SHA-256 of the ids as Python prints a list ("[1, 2, 3]"), which convert_hf_to_gguf.py hashes.
    public static func checkHash(_ ids: [Int32]) -> String {
        SHA256.hex(Array(("[" + ids.map(String.init).joined(separator: ", ") + "]").utf8))
    }

    /// A special token's id: tokenizer_config.json's `<kind>_token` (a string or {content}) found among the added
    /// tokens or the vocabulary, else config.json's `<kind>_token_id`.
    static func specialId(_ kind: String, config: [String: Any], modelConfig: [String: Any],
                          added: [(Int, String, Bool)], vocab: [String: Int]) -> Int? {
        let entry = config[kind + "_token"]
        if let content = (entry as? String) ?? ((entry as? [String: Any])?["content"] as? String) {
            if let id = added.first(where: { $0.1 == content })?.0 ?? vocab[content] { return id }
        }
        return modelConfig[kind + "_token_id"] as? Int
    }

    /// tokenizer_config.json's chat_template (a string, or a list whose "default" entry is used), else
    /// chat_template.jinja.
    static func chatTemplate(_ dir: URL, config: [String: Any]) throws -> String? {
        if let t = config["chat_template"] as? String { return t }
        if let list = config["chat_template"] as? [[String: Any]] {
            return list.first { $0["name"] as? String == "default" }?["template"] as? String
        }
        return try? String(contentsOf: dir.appendingPathComponent("chat_template.jinja"), encoding: .utf8)
    }

    static func readJSON(_ url: URL, required: Bool) throws -> [String: Any] {
        guard let data = try? Data(contentsOf: url) else {
            if required {
                throw LongTuneError("\(url.path): cannot read; the model directory needs its tokenizer files")
            }
            return [:]
        }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LongTuneError("\(url.path): not a JSON object")
        }
        return obj
    }
}

extension GGUFVocabulary {
    /// A read metadata value in the wire type llama.cpp expects for `key` (token lists as strings, types as i32,
    /// scores as f32, ids as u32), for copying a base GGUF's tokenizer keys.
    public static func value(_ v: GGUFFile.Value, key: String) -> GGUFValue? {
        switch v {
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .uint(let u): return .u32(UInt32(truncatingIfNeeded: u))
        case .int(let i): return .i32(Int32(truncatingIfNeeded: i))
        case .float(let f): return .f32(Float(f))
        case .array(let items):
            if key.hasSuffix("scores") { return .f32s(items.map { Float($0.double ?? 0) }) }
            if key.hasSuffix("token_type") { return .i32s(items.map { Int32($0.int ?? 0) }) }
            let strings = items.compactMap(\.string)
            return strings.count == items.count ? .strings(strings) : nil
        }
    }
}
