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
            XCTAssertEqual(tok.decode(ids), text, "\(kind): decode of \(text.debugDescription)", file: file, line: line)
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

final class PackTests: XCTestCase {
    func testPackedRowsAndDocumentIdsReadBack() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("packed-\(UUID().uuidString).h5")
        defer { try? FileManager.default.removeItem(at: url) }
        let writer = try PackedWriter(url: url, seqLen: 8)
        let packer = Packer(writer: writer, eos: 99)
        try packer.add(document: [1, 2, 3])
        try packer.add(document: [4, 5, 6, 7, 8, 9])
        try packer.add(document: [10, 11])
        try writer.finish(attributes: ["format": "longtune-packed"], integers: ["seq_len": 8, "eos_token_id": 99])
        XCTAssertEqual(packer.remainder, 6 - 0)   // 3+1 + 6+1 + 2+1 = 14 tokens: one row of 8, 6 left over
        let ds = try TokenDataset(url, vocabSize: 100)
        XCTAssertEqual(ds.shape, [1, 8])
        XCTAssertEqual(try ds.row(0), [1, 2, 3, 99, 4, 5, 6, 7])
        XCTAssertEqual(try ds.optionalRow("document_ids", 0), [0, 0, 0, 0, 1, 1, 1, 1])
    }
}
