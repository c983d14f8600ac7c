import Engine
import Foundation

/// The chat formats of the model families in common use, recognised from tokenizer_config.json's
/// `chat_template` (LongTune does not run Jinja; docs/CONVENTIONS.md §12 gives each format and how it
/// is detected). A single user turn, followed by the start of the assistant's turn.
public enum ChatFormat: Equatable {
    /// `<|im_start|>role\n…<|im_end|>\n` (SmolLM2, Qwen2): with the system turn the template adds
    /// when the conversation has none, if it has one.
    case chatML(defaultSystem: String?)
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>` after the BOS token (Llama 3); 3.1 and
    /// later templates always open with a system turn giving the knowledge cutoff and a date.
    case llama3(bos: String, dateHeader: String?)
    /// `BOS[INST] … [/INST]` (Mistral and Llama 2 instruct).
    case instruct(bos: String)

    /// The format of the model directory's tokenizer_config.json.
    public static func detect(directory: URL) throws -> ChatFormat {
        let file = directory.appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: file),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LongTuneError("\(file.path): cannot read it, so --chat cannot tell the model's chat format; "
                                + "write the prompt in the model's format and drop --chat")
        }
        var template = json["chat_template"] as? String
        if template == nil, let named = json["chat_template"] as? [[String: Any]] {   // [{name, template}]
            template = named.first { $0["name"] as? String == "default" }?["template"] as? String
        }
        guard let template else {
            throw LongTuneError("\(file.path): no chat_template; the model has no chat format to wrap the prompt in; "
                                + "drop --chat")
        }
        let bos = (json["bos_token"] as? String) ?? ((json["bos_token"] as? [String: Any])?["content"] as? String) ?? ""
        return try detect(template: template, bos: bos, source: file.path)
    }

    /// The format of a chat template; `source` names it in errors.
    public static func detect(template: String, bos: String, source: String) throws -> ChatFormat {
        if template.contains("<|im_start|>") {
            // The default system turn is a string literal in the template: with a newline or a Jinja "\n".
            let system = firstMatch(#"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>"#, in: template)
            return .chatML(defaultSystem: system?.replacingOccurrences(of: "\\n", with: "\n"))
        }
        if template.contains("<|start_header_id|>") {
            let header = template.contains("Cutting Knowledge Date")
                ? "Cutting Knowledge Date: December 2023\nToday Date: \(dateString(template))\n\n" : nil
            return .llama3(bos: bos, dateHeader: header)
        }
        if template.contains("[INST]") { return .instruct(bos: bos) }
        throw LongTuneError("\(source): chat_template is none of the formats --chat knows (ChatML <|im_start|>, "
                            + "Llama 3 <|start_header_id|>, Mistral [INST]); it begins "
                            + "\(String(template.prefix(80)).debugDescription). Write the prompt in the model's format "
                            + "and drop --chat")
    }

    /// The date a Llama 3.1+ template writes: today's where it asks for strftime_now (transformers
    /// provides it), else its default.
    static func dateString(_ template: String) -> String {
        if template.contains("strftime_now") {
            let f = DateFormatter()
            f.locale = Locale(identifier: "en_US_POSIX")
            f.dateFormat = "dd MMM yyyy"
            return f.string(from: Date())
        }
        return firstMatch(#"set date_string = "([^"]+)""#, in: template) ?? "26 Jul 2024"
    }

    private static func firstMatch(_ pattern: String, in text: String) -> String? {
        guard let re = try? NSRegularExpression(pattern: pattern, options: [.dotMatchesLineSeparators]),
              let m = re.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)),
              let r = Range(m.range(at: 1), in: text) else { return nil }
        return String(text[r])
    }

    /// The token that ends the assistant's turn (generation stops there).
    public var endOfTurn: String? {
        switch self {
        case .chatML: return "<|im_end|>"
        case .llama3: return "<|eot_id|>"
        case .instruct: return nil      // the EOS token, a stop token already
        }
    }

    /// The prompt text for one user message, ending where the assistant's reply begins.
    public func prompt(user: String) -> String {
        switch self {
        case .chatML(let system):
            return (system.map { "<|im_start|>system\n\($0)<|im_end|>\n" } ?? "")
                + "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
        case .llama3(let bos, let dateHeader):
            func turn(_ role: String, _ text: String) -> String {
                "<|start_header_id|>\(role)<|end_header_id|>\n\n\(text)<|eot_id|>"
            }
            let trimmed = user.trimmingCharacters(in: .whitespacesAndNewlines)
            return bos + (dateHeader.map { turn("system", $0) } ?? "") + turn("user", trimmed)
                + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        case .instruct(let bos):
            return bos + "[INST] \(user) [/INST]"
        }
    }
}
