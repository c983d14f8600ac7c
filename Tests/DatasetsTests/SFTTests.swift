import Datasets
import Engine
import Foundation
import TestSupport
import XCTest

/// SFT samples against transformers' assistant masks and LongLoRA's Alpaca preprocessing
/// (Tools/reference/make_sft_fixtures.py), and the packing rules of docs/CONVENTIONS.md §21.
final class SFTTests: XCTestCase {
    static let fixture = TokenizerTests.fixtures.appendingPathComponent("sft")

    func testIdsAndLabelsEqualTransformersAndLongLoRA() throws {
        let data = try Data(contentsOf: Self.fixture.appendingPathComponent("cases.json"))
        let cases = try JSONSerialization.jsonObject(with: data) as! [[String: Any]]
        XCTAssertEqual(cases.count, 84)
        for (n, c) in cases.enumerated() {
            let dir = Self.fixture.appendingPathComponent(c["tokenizer"] as! String)
            let tok = try Tokenizer(path: dir.path), eos = try XCTUnwrap(tok.eosTokenId)
            let format = try SFTPack.format(c["format"] as? String, tokenizerDir: dir, tokenizer: tok, eos: eos)
            let options = SFTPack.Options(seqLen: 4096, trainOn: TrainOn(rawValue: c["train_on"] as! String)!)
            let s = try SFTPack.sample(c["record"] as! [String: Any], place: "case \(n)", format: format,
                                       tokenizer: tok, options: options)
            let label = "case \(n) (\(c["tokenizer"]!), \(c["format"]!), train on \(c["train_on"]!))"
            XCTAssertEqual(s.ids, (c["ids"] as! [Int]).map { Int32($0) }, "\(label): ids")
            XCTAssertEqual(s.labels, (c["labels"] as! [Int]).map { Int32($0) }, "\(label): labels")
        }
    }

    /// Whole samples per row, each its own document; the padding is EOS, its own document, never trained.
    func testPackingKeepsSamplesWholeAndPadsWithUntrainedEOS() throws {
        let tmp = try TemporaryDirectory("sft"); defer { tmp.remove() }
        let dir = Self.fixture.appendingPathComponent("smollm2")
        let tok = try Tokenizer(path: dir.path), eos = tok.eosTokenId!
        let lines = (0..<12).map { i in
            #"{"messages": [{"role": "user", "content": "Question \#(i)?"}, {"role": "assistant", "content": "Answer \#(i)."}]}"#
        }
        let input = tmp.path("chat.jsonl")
        try lines.joined(separator: "\n").write(to: input, atomically: true, encoding: .utf8)
        let out = tmp.path("sft.h5")
        let writer = try PackedWriter(url: out, seqLen: 128, withLabels: true)
        let summary = try SFTPack.run(inputs: [input.path], tokenizerPath: dir.path, tokenizer: tok, eos: eos,
                                      writer: writer, options: .init(seqLen: 128))
        try writer.finish(attributes: [:], integers: ["seq_len": 128])
        XCTAssertEqual(summary.samples, 12)
        let ds = try TokenDataset(out)
        XCTAssertEqual(ds.shape, [summary.rows, 128])
        var seen = Set<Int32>(), trained = 0
        for r in 0..<summary.rows {
            let ids = try ds.row(r), labels = try ds.optionalRow("labels", r)!, docs = try ds.optionalRow("document_ids", r)!
            for (i, d) in docs.enumerated() where d == -1 {
                XCTAssertEqual(ids[i], eos); XCTAssertEqual(labels[i], -100)
                XCTAssertTrue(docs[i...].allSatisfy { $0 == -1 }, "padding only at the end of a row")
            }
            let samples = Set(docs.filter { $0 >= 0 })
            XCTAssertTrue(seen.isDisjoint(with: samples), "a sample in two rows")
            seen.formUnion(samples)
            trained += labels.filter { $0 != -100 }.count
        }
        XCTAssertEqual(seen.count, 12)
        XCTAssertEqual(trained, summary.trainedTokens)
        XCTAssertGreaterThan(summary.fill, 0.5)
    }

    func testTooLongSamplesStopOrAreCutOnThePromptSide() throws {
        let tmp = try TemporaryDirectory("sft"); defer { tmp.remove() }
        let dir = Self.fixture.appendingPathComponent("smollm2")
        let tok = try Tokenizer(path: dir.path), eos = tok.eosTokenId!
        let long = String(repeating: "word ", count: 200)
        let input = tmp.path("long.jsonl")
        try #"{"prompt": "\#(long)", "completion": "short answer"}"#.write(to: input, atomically: true, encoding: .utf8)
        let writer = try PackedWriter(url: tmp.path("a.h5"), seqLen: 64, withLabels: true)
        XCTAssertThrowsError(try SFTPack.run(inputs: [input.path], tokenizerPath: dir.path, tokenizer: tok, eos: eos,
                                             writer: writer, options: .init(seqLen: 64))) {
            XCTAssertTrue("\($0)".contains("long.jsonl line 1") && "\($0)".contains("--truncate"), "\($0)")
        }
        writer.abandon()
        let cut = try PackedWriter(url: tmp.path("b.h5"), seqLen: 64, withLabels: true)
        let s = try SFTPack.run(inputs: [input.path], tokenizerPath: dir.path, tokenizer: tok, eos: eos, writer: cut,
                                options: .init(seqLen: 64, truncate: true))
        cut.abandon()
        XCTAssertEqual(s.truncated, 1); XCTAssertEqual(s.responsesCut, 0); XCTAssertEqual(s.tokens, 64)
        XCTAssertGreaterThan(s.trainedTokens, 2)
    }

    func testBadRecordsNameTheLineAndField() throws {
        let bad: [(String, String)] = [
            (#"{"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}"#, "messages[0].\"role\" is missing"),
            (#"{"messages": [{"role": "robot", "content": "hi"}]}"#, "role is \"robot\""),
            (#"{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}"#, "is not a string"),
            (#"{"messages": [{"role": "user", "content": "hi"}]}"#, "no assistant turn"),
            (#"{"messages": []}"#, "non-empty list"),
            (#"{"instruction": "do it"}"#, "\"output\" is missing"),
            (#"{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]}"#, "conversations[1].\"value\""),
        ]
        for (line, expected) in bad {
            let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertThrowsError(try Conversation.parse(record, place: "data.jsonl line 7")) {
                XCTAssertTrue("\($0)".contains("data.jsonl line 7") && "\($0)".contains(expected), "\($0) for \(line)")
            }
        }
        XCTAssertNil(try Conversation.parse(["text": "plain"], place: "x"))
        let dir = Self.fixture.appendingPathComponent("smollm2")
        let tok = try Tokenizer(path: dir.path)
        XCTAssertThrowsError(try SFTPack.format("vicuna", tokenizerDir: dir, tokenizer: tok, eos: tok.eosTokenId!)) {
            XCTAssertTrue("\($0)".contains("--format vicuna: use chat, alpaca, airoboros"), "\($0)")
        }
    }

    /// airoboros 2.2's format as its model cards write it: system, then "\nUSER: " and "\nASSISTANT: " turns.
    func testAiroborosFormatTrainsTheRepliesAndTheirEOS() throws {
        let c = try XCTUnwrap(try Conversation.parse(["messages": [
            ["role": "user", "content": "BEGININPUT\nBEGINCONTEXT\ndate: 2021\nENDCONTEXT\nTides.\nENDINPUT\n"
                + "BEGININSTRUCTION\nWhat is it about?\nENDINSTRUCTION"],
            ["role": "assistant", "content": "Tides."], ["role": "user", "content": "More?"],
            ["role": "assistant", "content": "No."]]], place: "x"))
        let (text, trained) = try SFTFormat.airoboros(eos: "</s>").render(c, trainOn: .assistant)
        XCTAssertEqual(text, "A chat.\nUSER: BEGININPUT\nBEGINCONTEXT\ndate: 2021\nENDCONTEXT\nTides.\nENDINPUT\n"
                       + "BEGININSTRUCTION\nWhat is it about?\nENDINSTRUCTION\nASSISTANT: Tides.</s>\nUSER: More?"
                       + "\nASSISTANT: No.</s>")
        let bytes = Array(text.utf8)
        XCTAssertEqual(trained.map { String(decoding: bytes[$0], as: UTF8.self) }, ["Tides.</s>", "No.</s>"])
        let last = try SFTFormat.airoboros(eos: "</s>").render(c, trainOn: .last).trained
        XCTAssertEqual(last.map { String(decoding: bytes[$0], as: UTF8.self) }, ["No.</s>"])
    }

    func testASampleWithNothingToTrainIsAnError() throws {
        let tmp = try TemporaryDirectory("sft"); defer { tmp.remove() }
        let writer = try PackedWriter(url: tmp.path("x.h5"), seqLen: 16, withLabels: true)
        defer { writer.abandon() }
        let tok = try Tokenizer(path: Self.fixture.appendingPathComponent("smollm2").path)
        var sample = try SFTSample(text: "hello there", trained: [], tokenizer: tok)
        XCTAssertEqual(sample.trainedTokens, 0)
        XCTAssertThrowsError(try SFTPacker(writer: writer, pad: 0, truncate: false).add(sample, place: "a.jsonl line 2")) {
            XCTAssertTrue("\($0)".contains("a.jsonl line 2: no token to train on"), "\($0)")
        }
        sample = try SFTSample(text: "hello there", trained: [6..<11], tokenizer: tok)
        XCTAssertEqual(tok.decode(sample.ids.enumerated().filter { sample.labels[$0.offset] != -100 }.map(\.element)),
                       " there")
    }
}
