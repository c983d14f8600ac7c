import Datasets
import Engine
import Foundation

/// tokenizer.json and tokenizer_config.json from GGUF tokenizer metadata, built as transformers'
/// GGUF loader builds them: byte-level BPE ("gpt2" files: GPT-2, Llama 3, SmolLM2) with the split
/// regex the file's `tokenizer.ggml.pre` names, and control tokens as special added tokens.
public enum GGUFTokenizer {
    static let llama3Split = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"#
        + #"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let llama3Pre: Set<String> = ["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"]

    static var byteToUnicode: [Character] { Tokenizer.byteToChar }

    public static func write(_ g: GGUFFile, to out: URL) throws {
        let path = g.url.path
        let model = g.metadata["tokenizer.ggml.model"]?.string ?? "?"
        guard model == "gpt2" else {
            throw LongTuneError(
                "\(path): tokenizer.ggml.model \"\(model)\" is not supported yet (byte-level BPE \"gpt2\" is)")
        }
        guard let tokens = g.metadata["tokenizer.ggml.tokens"]?.array?.compactMap(\.string),
              let merges = g.metadata["tokenizer.ggml.merges"]?.array?.compactMap(\.string) else {
            throw LongTuneError("\(path): tokenizer.ggml.tokens or tokenizer.ggml.merges missing")
        }
        let types = g.metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        let alphabet = Set(byteToUnicode)
        func spelled(_ t: String) -> String {
            t.allSatisfy(alphabet.contains) ? t : String(t.utf8.map { byteToUnicode[Int($0)] })
        }

        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { vocab[spelled(t)] = i }
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() where i < types.count && (types[i] == 3 || types[i] == 4)
                                             && t.allSatisfy(alphabet.contains) {
            added.append(["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": types[i] == 4, "special": types[i] == 3])
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                        "use_regex": true]
        var pre: [String: Any] = byteLevel
        if let p = g.metadata["tokenizer.ggml.pre"]?.string, llama3Pre.contains(p) {
            pre = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": llama3Split], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false],
            ]]
        }
        let tokenizer: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": NSNull(), "pre_tokenizer": pre,
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges.map { $0.split(separator: " ", maxSplits: 1).map(String.init) }],
        ]
        try AtomicFile.write(try JSONSerialization.data(withJSONObject: tokenizer, options: [.sortedKeys]),
                             to: out.appendingPathComponent("tokenizer.json"))
        var cfg: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast",
                                  "model_max_length": g.metadata["llama.context_length"]?.int ?? 2048,
                                  "clean_up_tokenization_spaces": false]
        for (key, meta) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                            ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")] {
            if let id = g.metadata["tokenizer.ggml." + meta]?.int, tokens.indices.contains(id) { cfg[key] = tokens[id] }
        }
        if let t = g.metadata["tokenizer.chat_template"]?.string { cfg["chat_template"] = t }
        try AtomicFile.writeJSON(object: cfg,
                             to: out.appendingPathComponent("tokenizer_config.json"))
    }
}
