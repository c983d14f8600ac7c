import Datasets
import Foundation
import XCTest

/// Token ids identical to the `tokenizers` package (fixtures from Tools/reference/make_tokenizer_fixtures.py).
final class TokenizerTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

    func check(_ kind: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = Self.fixtures.appendingPathComponent(kind)
        let tok = try Tokenizer(path: dir.path)
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("expected.json"))) as! [[String: Any]]
        for c in cases {
            let text = c["text"] as! String, ids = (c["ids"] as! [Int]).map { Int32($0) }
            XCTAssertEqual(tok.encode(text), ids, "\(kind): \(text.debugDescription)", file: file, line: line)
        }
    }

    func testGPT2ByteLevel() throws { try check("gpt2") }
    func testSmolLM2DigitsThenByteLevel() throws { try check("smollm2") }
    func testLlama3SplitRegex() throws { try check("llama3") }
    func testSentencePieceBPEWithByteFallback() throws { try check("sentencepiece") }

    func testEOSFromVocabulary() throws {
        let tok = try Tokenizer(path: Self.fixtures.appendingPathComponent("gpt2").path)
        XCTAssertEqual(tok.eosTokenId, 0)   // <|endoftext|>, the first special token
    }
}
