import Datasets
import Foundation
import TestSupport
import XCTest

/// Chat prompts against transformers' apply_chat_template (fixture from
/// Tools/reference/make_generate_fixtures.py), and text streamed across split characters.
final class ChatFormatTests: XCTestCase {
    struct Case: Decodable { let name, template, bos_token, user, rendered: String }

    func testPromptsEqualTransformersRendering() throws {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("chat/formats.json")
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: url))
        XCTAssertTrue(cases.contains { $0.name == "smollm2" }, "the fixture should include SmolLM2's own template")
        for c in cases {
            let format = try ChatFormat.detect(template: c.template, bos: c.bos_token, source: c.name)
            XCTAssertEqual(format.prompt(user: c.user), c.rendered, c.name)
        }
    }

    func testUnknownTemplatesAreErrors() {
        expectError(["none of the formats", "drop --chat", "{{ gemma"]) {
            _ = try ChatFormat.detect(template: "{{ gemma <start_of_turn> }}", bos: "", source: "x")
        }
    }

    func testStreamHoldsSplitCharactersBack() {
        let text = "héllo 🙂 世界!"
        var stream = UTF8Stream(), out = ""
        for byte in Array(text.utf8) {
            let piece = stream.push([byte])
            XCTAssertFalse(piece.contains("\u{FFFD}"), "a split character must be held back, not replaced")
            out += piece
        }
        XCTAssertEqual(out + stream.finish(), text)
        var broken = UTF8Stream()
        XCTAssertEqual(broken.push([0x41, 0xF0, 0x9F]), "A")
        XCTAssertEqual(broken.finish(), "\u{FFFD}", "an unfinished character at the end becomes U+FFFD")
        // A token the tokenizer has no bytes for (a padded vocabulary's extra ids) adds nothing.
        var empty = UTF8Stream()
        XCTAssertEqual(empty.push([]), "")
        XCTAssertEqual(empty.push([0x68, 0x69]) + empty.push([]), "hi")
    }
}

/// `--chat` reads tokenizer_config.json as transformers writes it: a template string or a list of named
/// templates, bos_token as a string or an added-token object; missing pieces are errors naming the file.
final class ChatFormatDirectoryTests: XCTestCase {
    func testReadsNamedTemplatesAndTokenObjects() throws {
        let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("chat")
        let format = try ChatFormat.detect(directory: dir)
        guard case .chatML(let system) = format else { return XCTFail("expected ChatML, got \(format)") }
        XCTAssertEqual(system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        XCTAssertEqual(format.endOfTurn, "<|im_end|>")
    }

    func testMissingFileOrTemplateIsAnError() throws {
        let tmp = try TemporaryDirectory("chat")
        defer { tmp.remove() }
        expectError([tmp.url.path, "tokenizer_config.json", "drop --chat"]) { _ = try ChatFormat.detect(directory: tmp.url) }
        try Data(#"{"eos_token": "</s>"}"#.utf8).write(to: tmp.path("tokenizer_config.json"))
        expectError(["no chat_template", "drop --chat"]) { _ = try ChatFormat.detect(directory: tmp.url) }
        try Data(#"{"bos_token": "<s>", "chat_template": "{{ bos_token }}[INST] {{ m }} [/INST]"}"#.utf8)
            .write(to: tmp.path("tokenizer_config.json"))
        XCTAssertEqual(try ChatFormat.detect(directory: tmp.url).prompt(user: "hi"), "<s>[INST] hi [/INST]")
    }
}
