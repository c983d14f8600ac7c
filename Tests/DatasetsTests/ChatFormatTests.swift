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
    }
}
