import Engine
import Formats
import Foundation
import Training
import TestSupport
import XCTest

/// Nothing a user owns is replaced (docs/CONVENTIONS.md §19): every command's output paths go through `OutputPath`,
/// and numeric options that mean nothing are errors, before anything is written.
final class OutputPathTests: XCTestCase {
    var tmp: TemporaryDirectory!
    override func setUpWithError() throws { tmp = try TemporaryDirectory("output-paths") }
    override func tearDown() { tmp.remove() }

    /// A file of the user's, with its bytes.
    func userFile(_ name: String) throws -> (path: String, bytes: Data) {
        let url = tmp.path(name), bytes = Data("my notes \(name)\n".utf8)
        try bytes.write(to: url)
        return (url.path, bytes)
    }

    /// A directory of the user's holding one file.
    func userDirectory(_ name: String) throws -> String {
        let url = tmp.path(name)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: url.appendingPathComponent("keep.txt"))
        return url.path
    }

    func assertUntouchedDirectory(_ path: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path), ["keep.txt"], path, file: file, line: line)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path + "/keep.txt")), Data("keep me".utf8), path,
                       file: file, line: line)
    }

    func testTheRule() throws {
        let (notes, _) = try userFile("notes.txt")
        let foreign = try userDirectory("photos")
        let empty = tmp.path("empty").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let model = tmp.path("model").path
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: model + "/config.json"))
        func fails(_ path: String, _ kind: OutputPath.Kind, force: Bool = false, _ needles: [String]) {
            XCTAssertThrowsError(try OutputPath.check(path, option: "--out", kind: kind, force: force), path) { error in
                for n in needles + ["--out", path] where !n.isEmpty {
                    XCTAssertTrue("\(error)".contains(n), "\(error) should say \(n)")
                }
            }
        }
        XCTAssertNoThrow(try OutputPath.check(tmp.path("new").path, option: "--out", kind: .directory(.model)))
        XCTAssertNoThrow(try OutputPath.check(notes, option: "--out", kind: .file), "a file replaces a file")
        XCTAssertNoThrow(try OutputPath.check(empty, option: "--out", kind: .directory(.model)), "an empty directory")
        XCTAssertNoThrow(try OutputPath.check(model, option: "--out", kind: .directory(.model), force: true))
        fails(foreign, .file, ["a directory is there"])
        fails(notes, .directory(.model), ["a file is there"])
        fails(notes, .directory(.peftAdapter), force: true, ["a file is there"])
        fails(model, .directory(.model), ["--force"])
        fails(foreign, .directory(.model), force: true, ["not a model directory (config.json)", "even --force"])
        fails(model, .directory(.peftAdapter), force: true, ["not a peft adapter"])
        fails(foreign, .runDirectory, ["not a LongTune run"])
        fails(notes, .runDirectory, ["a file is there"])
        fails("", .file, ["empty path"])
        XCTAssertNoThrow(try OutputPath.check(empty, option: "--out", kind: .runDirectory))
        assertUntouchedDirectory(foreign)
    }

    // MARK: the command line

    var exe: URL {
        get throws {
            let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("longtune")
            guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built") }
            return exe
        }
    }

    func longtune(_ args: [String]) throws -> (status: Int32, stderr: String) {
        let p = Process(), err = Pipe()
        p.executableURL = try exe
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice; p.standardError = err
        try p.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, message)
    }

    /// A checkpoint of the tiny recipe (four steps), trained in process.
    func checkpoint() throws -> String {
        let run = tmp.path("run")
        let r = try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "training.steps=4", "model.context_length=64", "logging.eval_every=0", "checkpoints.dir=\(run.path)"])
        try Trainer(recipe: r, log: { _ in }).run()
        return run.appendingPathComponent("latest").path
    }

    var model: String { BadInputTests.llamaFixtures.appendingPathComponent("default_gqa").path }
    var data: String { TrainerTests.datasets.appendingPathComponent("default_gqa_tokens.h5").path }
    var gguf: String { BadInputTests.llamaFixtures.appendingPathComponent("gguf/tiny.gguf").path }

    /// The slips a person makes: none succeeds, each names the option, and the user's files are unchanged.
    func testSlipsFailBeforeWritingAnything() throws {
        let ck = try checkpoint()
        let (notes, bytes) = try userFile("notes.txt")
        let tiny = TrainerTests.tinyRecipe.path
        let cases: [([String], String)] = [
            (["merge", ck, "--out", tmp.path("merged").path, "--peft", notes], "--peft"),
            (["import-gguf", gguf, "--out", notes], "--out"),
            (["train", tiny, "--stop-after", "0", "--set", "checkpoints.dir=\(tmp.path("t0").path)"], "--stop-after"),
            (["train", tiny, "--stop-after", "-3", "--set", "checkpoints.dir=\(tmp.path("t1").path)"], "--stop-after"),
            (["merge", ck, "--out", tmp.path("m0").path, "--max-shard-mib", "0"], "--max-shard-mib"),
            (["merge", ck, "--out", tmp.path("m1").path, "--max-shard-mib", "-1"], "--max-shard-mib"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", ""], "--context"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "64,,128"], "--context"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "8", "--max-windows", "0"],
             "--max-windows"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "8", "--max-windows", "-3"],
             "--max-windows"),
        ]
        for (args, needle) in cases {
            let r = try longtune(args)
            XCTAssertNotEqual(r.status, 0, "\(args) succeeded")
            XCTAssertTrue(r.stderr.contains(needle), "\(args): \"\(r.stderr)\" should name \(needle)")
            XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: notes)), bytes, "\(args) changed notes.txt")
        }
        for dir in ["merged", "t0", "t1", "m0", "m1"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path(dir).path), "\(dir) was written")
        }
    }

    /// A GGUF whose eos_token_id is no token of its vocabulary does not import: 2^63 + 1 as a UInt64 (in a header
    /// built here), and the fixture's own id patched to 2^32 − 1 (through the command).
    func testGGUFSpecialTokenOutsideTheVocabulary() throws {
        func string(_ s: String) -> Data { BadInputTests.bytes(UInt64(s.utf8.count)) + Data(s.utf8) }
        let metadata = [BadInputTests.kv("general.architecture", type: 8, string("llama")),
                        BadInputTests.kv("tokenizer.ggml.eos_token_id", type: 10, BadInputTests.bytes((UInt64(1) << 63) + 1))]
            + ["attention.head_count": 4, "embedding_length": 64, "feed_forward_length": 128, "block_count": 1,
               "vocab_size": 256, "context_length": 256]
            .map { BadInputTests.kv("llama." + $0.key, type: 4, BadInputTests.bytes(UInt32($0.value))) }
        var header = Data("GGUF".utf8) + BadInputTests.bytes(UInt32(3)) + BadInputTests.bytes(UInt64(0))
        header += BadInputTests.bytes(UInt64(metadata.count)) + metadata.reduce(Data(), +)
        let built = tmp.path("huge-eos.gguf")
        try header.write(to: built)
        XCTAssertThrowsError(try GGUFImport.config(from: try GGUFFile(built))) { error in
            XCTAssertTrue("\(error)".contains("tokenizer.ggml.eos_token_id") && "\(error)".contains("256-token"), "\(error)")
        }

        let original = try Data(contentsOf: URL(fileURLWithPath: gguf))
        let file = try GGUFFile(URL(fileURLWithPath: gguf))
        guard file.metadata["tokenizer.ggml.eos_token_id"] != nil else { throw XCTSkip("the fixture has no EOS id") }
        // The fixture's EOS id, a UInt32, widened in place is not possible: patch its key to a UInt64 of 2^63 + 1.
        let key = Data("tokenizer.ggml.eos_token_id".utf8)
        guard let at = original.range(of: key) else { throw XCTSkip("EOS key not found in the fixture's bytes") }
        var patched = original
        let typeAt = at.upperBound
        let type = patched[typeAt..<(typeAt + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        guard type == 4 || type == 5 else { throw XCTSkip("EOS id stored as GGUF type \(type)") }
        // Same width (4 bytes) as a UInt32 value: store 0xFFFF_FFFF, far outside any vocabulary.
        patched.replaceSubrange((typeAt + 4)..<(typeAt + 8), with: withUnsafeBytes(of: UInt32.max.littleEndian) { Data($0) })
        let url = tmp.path("eos.gguf")
        try patched.write(to: url)
        let r = try longtune(["import-gguf", url.path, "--out", tmp.path("imported").path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("tokenizer.ggml.eos_token_id"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp.path("imported").path))
    }

    /// Every command's every output option, against a file of the user's (where it writes a directory) and a
    /// directory of the user's (with --force where the command has it): each fails, naming the option, and leaves them
    /// as they were.
    func testEveryOutputOptionAgainstAFileAndAForeignDirectory() throws {
        let ck = try checkpoint()
        let run = tmp.path("run").path
        let outputs: [(option: String, writesDirectory: Bool, command: (String) -> [String])] = [
            ("checkpoints.dir", true, { ["train", TrainerTests.tinyRecipe.path, "--set", "checkpoints.dir=\($0)"] }),
            ("--out", true, { ["merge", ck, "--out", $0, "--force"] }),
            ("--peft", true, { ["merge", ck, "--out", self.tmp.path("fresh-\(UUID().uuidString)").path, "--peft", $0,
                                "--force"] }),
            ("--out", true, { ["quantize", self.model, "--out", $0, "--force"] }),
            ("--out", true, { ["import-gguf", self.gguf, "--out", $0, "--force"] }),
            ("--out", false, { ["pack", "--tokenizer", BadInputTests.tokenizerFixtures.appendingPathComponent("gpt2").path,
                                "--seq-len", "4", "--out", $0, TrainerTests.tinyRecipe.path] }),
            ("--json", false, { ["eval", "perplexity", "--model", self.model, "--data", self.data, "--context", "8",
                                 "--json", $0] }),
            ("--json", false, { ["eval", "passkey", "--model", self.model, "--context", "64", "--json", $0] }),
            ("--json", false, { ["eval", "streaming", "--model", self.model, "--data", self.data, "--window", "8",
                                 "--json", $0] }),
            ("--out", false, { ["report", run, "--out", $0] }),
        ]
        for (i, output) in outputs.enumerated() {
            var targets = [try userDirectory("dir-\(i)")]
            if output.writesDirectory { targets.append(try userFile("file-\(i)").path) }
            for target in targets {
                let before = try? Data(contentsOf: URL(fileURLWithPath: target))
                let args = output.command(target)
                let r = try longtune(args)
                XCTAssertNotEqual(r.status, 0, "\(args) succeeded")
                XCTAssertTrue(r.stderr.contains(output.option) && r.stderr.contains(target),
                              "\(args): \"\(r.stderr)\" should name \(output.option) and the path")
                if target.contains("dir-") { assertUntouchedDirectory(target) } else {
                    XCTAssertEqual(try? Data(contentsOf: URL(fileURLWithPath: target)), before, "\(args)")
                }
            }
        }
    }
}
