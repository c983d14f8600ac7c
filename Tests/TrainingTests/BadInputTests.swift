import Datasets
import Engine
import Formats
import Foundation
import Llama
import TestSupport
import Training
import XCTest

/// Malformed inputs across the formats and commands: each is a thrown error (never a trap) whose
/// message names the file (or flag) and the field at fault.
final class BadInputTests: XCTestCase {
    static let llamaFixtures = repositoryRoot.appendingPathComponent("Tests/LlamaTests/Fixtures")
    static let tokenizerFixtures = repositoryRoot.appendingPathComponent("Tests/DatasetsTests/Fixtures")
    var tmp: TemporaryDirectory!
    var tried = 0
    override func setUpWithError() throws { tmp = try TemporaryDirectory("bad") }
    override func tearDown() { tmp.remove() }

    func expect(_ needles: [String], _ what: String = "", file: StaticString = #filePath, line: UInt = #line,
                _ body: () throws -> Void) {
        tried += 1
        XCTAssertThrowsError(try body(), what, file: file, line: line) { e in
            for n in needles {
                XCTAssertTrue("\(e)".contains(n), "\(what): error \"\(e)\" should mention \"\(n)\"", file: file, line: line)
            }
        }
    }

    // MARK: recipes

    func testRecipeValues() throws {
        let recipe = TrainerTests.tinyRecipe
        let cases: [(String, String)] = [
            ("training.steps=0", "training.steps"), ("training.steps=-1", "training.steps"),
            ("training.steps=2.5", "training.steps"), ("training.steps=forty", "training.steps"),
            ("training.steps=.nan", "training.steps"), ("training.batch_size=0", "training.batch_size"),
            ("training.batch_size=-3", "training.batch_size"),
            ("training.gradient_accumulation=0", "training.gradient_accumulation"),
            ("training.learning_rate=0", "training.learning_rate"), ("training.learning_rate=-1", "training.learning_rate"),
            ("training.learning_rate=.inf", "training.learning_rate"),
            ("training.learning_rate=.nan", "training.learning_rate"),
            ("training.extras_learning_rate=-1", "training.extras_learning_rate"),
            ("training.warmup_steps=-1", "training.warmup_steps"), ("training.warmup_steps=1000", "training.warmup_steps"),
            ("training.weight_decay=-0.1", "training.weight_decay"), ("training.max_grad_norm=0", "training.max_grad_norm"),
            ("training.max_grad_norm=-1", "training.max_grad_norm"),
            ("training.max_grad_norm=.inf", "training.max_grad_norm"),
            ("training.schedule=cosin", "training.schedule"), ("training.schedule=3", "training.schedule"),
            ("training.seed=-1", "training.seed"),
            ("training.activation_checkpointing=maybe", "training.activation_checkpointing"),
            ("adapter.rank=0", "rank"), ("adapter.rank=-4", "rank"), ("adapter.rank=2.5", "adapter.rank"),
            ("adapter.alpha=0", "alpha"), ("adapter.alpha=-1", "alpha"), ("adapter.dropout=1", "dropout"),
            ("adapter.dropout=-0.1", "dropout"), ("adapter.targets=[qkv]", "adapter.targets"),
            ("adapter.trainable=[head]", "adapter.trainable"), ("adapter.kind=qlora", "adapter.kind"),
            ("adapter.targets=q_proj", "adapter.targets"),
            ("attention.mode=sparse", "attention.mode"), ("attention.shift=left", "attention.shift"),
            ("attention.group_ratio=0.3", "attention.group_ratio"), ("attention.group_ratio=0", "attention.group_ratio"),
            ("attention.group_ratio=-1", "attention.group_ratio"), ("attention.group_ratio=2", "attention.group_ratio"),
            ("model.context_length=1", "model.context_length"), ("model.context_length=-5", "model.context_length"),
            ("model.context_length=100", "attention.group_ratio"),
            ("model.rope_scaling={rope_type: dynamic, factor: 2}", "model.rope_scaling"),
            ("model.rope_scaling={rope_type: nope}", "model.rope_scaling"),
            ("model.rope_scaling={rope_type: linear, factor: .nan}", "model.rope_scaling"),
            ("checkpoints.every=0", "checkpoints.every"), ("checkpoints.keep=0", "checkpoints.keep"),
            ("logging.every=0", "logging.every"), ("logging.eval_every=-1", "logging.eval_every"),
            ("data.eval_sequences=0", "data.eval_sequences"), ("training.stepz=3", "training.stepz"),
            ("foo.bar=1", "foo"), ("data.train=[a, b]", "data.train"), ("data.shuffle=sometimes", "data.shuffle"),
            // Whole numbers past Int's range arrive from YAML as doubles (Int(1e19) would trap).
            ("training.seed=12345678901234567890", "training.seed"), ("training.steps=1e19", "training.steps"),
            ("model.context_length=8589934592", "model.context_length"),
        ]
        for (override, key) in cases {
            expect([recipe.path, key]) { _ = try Recipe.load(recipe, overrides: [override]) }
        }
        // The last three were found by the recipe fuzzer (Yams' Any constructor trapped on them).
        let fuzzed = "# a comment\n? (8192-token window) to 16384 tokens: runs in seconds\n"
        for text in ["model: [unclosed\n", "- just\n- a list\n", "model: 3\n", fuzzed, "? [a, b]\n: 1\n",
                     "model: {path: a}\nmodel: {path: b}\n"] {
            let url = tmp.path("r\(tried).yaml")
            try text.write(to: url, atomically: true, encoding: .utf8)
            expect([url.path]) { _ = try Recipe.load(url) }
        }
        XCTAssertGreaterThanOrEqual(tried, 55)
        // A RoPE scaling missing its keys is named when the plan (run before training) reads the config.
        for (scaling, key) in [("{rope_type: linear}", "factor"), ("{rope_type: ntk_alpha, factor: 4}", "alpha_value")] {
            let r = try Recipe.load(recipe, overrides: ["model.rope_scaling=\(scaling)"])
            expect(["model.rope_scaling", key]) { _ = try Planner.modelConfig(r) }
        }
    }

    /// A bad RoPE override is blamed on where it came from, not on the model's config.json.
    func testRopeOverrides() throws {
        let cases: [(String, String)] = [
            (#"{"rope_type": "linear", "factor": -2}"#, "factor"), (#"{"rope_type": "linear"}"#, "factor"),
            (#"{"rope_type": "ntk_alpha", "alpha_value": 0}"#, "alpha_value"),
            (#"{"rope_type": "yarn", "factor": 2, "beta_fast": -1}"#, "beta_fast"),
            (#"{"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1, "#
             + #""original_max_position_embeddings": 64}"#,
             "high_freq_factor"),
            (#"{"rope_type": "longrope", "short_factor": [1], "long_factor": [1]}"#, "short_factor"),
            (#"{"rope_type": "yarn", "factor": 2, "original_max_position_embeddings": -1}"#,
             "original_max_position_embeddings"),
        ]
        let model = BadInputTests.llamaFixtures.appendingPathComponent("default_gqa").path
        for (json, field) in cases {
            let scaling = try JSONDecoder().decode(RopeScaling.self, from: Data(json.utf8))
            expect(["--rope-scaling", field]) { _ = try ModelSource.load(model, ropeOverride: scaling) }
        }
    }

    // MARK: config.json

    func testConfigFields() throws {
        let source = BadInputTests.llamaFixtures.appendingPathComponent("default_gqa/config.json")
        let good = try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as! [String: Any]
        let cases: [(String, Any, String)] = [
            ("num_key_value_heads", 0, "num_key_value_heads"), ("num_key_value_heads", -2, "num_key_value_heads"),
            ("num_key_value_heads", 3, "num_key_value_heads"), ("num_attention_heads", 0, "num_attention_heads"),
            ("hidden_size", 0, "hidden_size"), ("vocab_size", -1, "vocab_size"), ("vocab_size", 1 << 40, "vocab_size"),
            ("head_dim", 0, "head_dim"), ("num_hidden_layers", 0, "num_hidden_layers"),
            ("num_hidden_layers", 100_000, "corrupt"),   // a layer count that would build 100k layers before any tensor
            ("intermediate_size", 0, "intermediate_size"), ("max_position_embeddings", 0, "max_position_embeddings"),
            ("rms_norm_eps", 0, "rms_norm_eps"), ("rms_norm_eps", -1e-5, "rms_norm_eps"), ("rope_theta", 0, "rope_theta"),
            ("partial_rotary_factor", 0, "partial_rotary_factor"), ("partial_rotary_factor", 2, "partial_rotary_factor"),
            ("hidden_act", "gelu", "hidden_act"), ("architectures", ["GPT2LMHeadModel"], "architectures"),
            ("vocab_size", "many", "vocab_size"), ("rope_scaling", ["rope_type": "linear"], "factor"),
            ("rope_scaling", ["rope_type": "linear", "factor": -2], "factor"),
            ("rope_scaling", ["rope_type": "warp"], "rope_type"),
        ]
        for (field, value, needle) in cases {
            var json = good
            json[field] = value
            if field == "rope_theta" || field == "rope_scaling" { json["rope_parameters"] = nil }   // v4 style
            if field == "rope_scaling" { json["rope_theta"] = 10000 }
            let dir = tmp.path("config-\(tried)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("config.json"))
            expect([dir.appendingPathComponent("config.json").path, needle], "\(field) = \(value)") {
                _ = try LlamaConfig.load(dir.appendingPathComponent("config.json"))
            }
        }
        // Found by the config fuzzer: no head_dim and no heads divided by zero while decoding.
        var headless = good
        headless["head_dim"] = nil
        headless["num_attention_heads"] = 0
        try JSONSerialization.data(withJSONObject: headless).write(to: tmp.path("headless.json"))
        expect([tmp.path("headless.json").path, "num_attention_heads"]) {
            _ = try LlamaConfig.load(self.tmp.path("headless.json"))
        }
        var missing = good
        missing["hidden_size"] = nil
        try JSONSerialization.data(withJSONObject: missing).write(to: tmp.path("missing.json"))
        expect([tmp.path("missing.json").path, "hidden_size"]) { _ = try LlamaConfig.load(tmp.path("missing.json")) }
    }

    // MARK: safetensors

    func safetensors(header: Data, length: UInt64? = nil, dataBytes: Int = 0) throws -> URL {
        let url = tmp.path("t\(tried).safetensors")
        var d = Data()
        withUnsafeBytes(of: (length ?? UInt64(header.count)).littleEndian) { d.append(contentsOf: $0) }
        d.append(header)
        d.append(Data(count: dataBytes))
        try d.write(to: url)
        return url
    }

    func testSafetensorsHeaders() throws {
        let cases: [(String, UInt64?, Int, String)] = [
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, UInt64.max - 3, 8, "header length"),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, 1 << 63, 8, "header length"),
            ("{}", 0, 0, "header length"),
            (#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}}"#, nil, 8, "\"a\""),
            (#"{"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}"#, nil, 8, "\"a\""),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}"#, nil, 8, "\"a\""),
            (#"{"a": {"dtype": "F32", "shape": [2]}}"#, nil, 8, "\"a\""),
            (#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 9223372036854775807]}}"#, nil, 8, "\"a\""),
            (#"{"a": 3}"#, nil, 8, "\"a\""), ("[1, 2]", nil, 0, "JSON object"), ("{not json", nil, 0, "JSON"),
        ]
        for (header, length, bytes, needle) in cases {
            let url = try safetensors(header: Data(header.utf8), length: length, dataBytes: bytes)
            expect([url.path, needle]) { _ = try SafetensorsFile(url) }
        }
        let short = tmp.path("short.safetensors")
        try Data([1, 2, 3]).write(to: short)
        expect([short.path, "truncated"]) { _ = try SafetensorsFile(short) }
    }

    // MARK: GGUF

    /// A GGUF header: magic, version, counts, then `body`.
    func gguf(version: UInt32 = 3, tensors: UInt64 = 0, kv: UInt64 = 0, body: Data = Data()) throws -> URL {
        var d = Data("GGUF".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        put(version); put(tensors); put(kv)
        d.append(body)
        let url = tmp.path("g-\(UUID().uuidString).gguf")
        try d.write(to: url)
        return url
    }

    static func kv(_ key: String, type: UInt32, _ value: Data) -> Data {
        var d = Data()
        withUnsafeBytes(of: UInt64(key.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(Data(key.utf8))
        withUnsafeBytes(of: type.littleEndian) { d.append(contentsOf: $0) }
        return d + value
    }

    static func bytes<T: FixedWidthInteger>(_ v: T) -> Data { withUnsafeBytes(of: v.littleEndian) { Data($0) } }

    func testGGUFHeaders() throws {
        let cases: [(URL, String)] = [
            (try gguf(version: 1), "version"), (try gguf(tensors: 1 << 63), "tensor count"),
            (try gguf(kv: UInt64.max), "metadata count"),
            (try gguf(kv: 1, body: Self.bytes(UInt64(1) << 62)), "string length"),
            (try gguf(kv: 1, body: Self.kv("general.alignment", type: 4, Self.bytes(UInt32(0)))), "general.alignment"),
            (try gguf(kv: 1, body: Self.kv("general.alignment", type: 6, Self.bytes(Float.nan.bitPattern))),
             "general.alignment"),
            (try gguf(kv: 1, body: Self.kv("a", type: 9, Self.bytes(UInt32(4)) + Self.bytes(UInt64.max))), "array length"),
            (try gguf(kv: 1, body: Self.kv("a", type: 99, Data())), "value type"),
            (try gguf(tensors: 1,
                      body: Self.kv("t", type: 1, Data()).dropLast(4) + Self.bytes(UInt32(1)) + Self.bytes(UInt64.max)),
             "dimension"),
            (try gguf(tensors: 1, kv: 0), "truncated"),
        ]
        for (url, needle) in cases { expect([url.path, needle]) { _ = try GGUFFile(url) } }
        // Found by the GGUF fuzzer: zero heads and no key_length divided by zero building the config.
        func string(_ s: String) -> Data { Self.bytes(UInt64(s.utf8.count)) + Data(s.utf8) }
        let metadata = [Self.kv("general.architecture", type: 8, string("llama"))]
            + ["attention.head_count": 0, "embedding_length": 64, "feed_forward_length": 128, "block_count": 1,
               "vocab_size": 256,
               "context_length": 256].map { Self.kv("llama." + $0.key, type: 4, Self.bytes(UInt32($0.value))) }
        let headless = try gguf(kv: UInt64(metadata.count), body: metadata.reduce(Data(), +))
        expect([headless.path, "num_attention_heads"]) {
            try GGUFImport.run(try GGUFFile(headless), to: self.tmp.path("imported"))
        }
        // Also from the fuzzer: block_count 2931845747 built that many layers (out of memory) before any tensor.
        let deepModel = [Self.kv("general.architecture", type: 8, string("llama"))]
            + ["attention.head_count": 4, "embedding_length": 64, "feed_forward_length": 128, "block_count": 2_931_845_747,
               "vocab_size": 256, "context_length": 256].map { Self.kv("llama." + $0.key, type: 4, Self.bytes(UInt32($0.value))) }
        let layered = try gguf(kv: UInt64(deepModel.count), body: deepModel.reduce(Data(), +))
        expect([layered.path, "num_hidden_layers"]) { _ = try GGUFImport.config(from: try GGUFFile(layered)) }
        // Arrays of arrays nested 40 deep (a stack-exhausting file) stop at 8 levels.
        var nested = Data()
        for _ in 0..<40 { withUnsafeBytes(of: UInt32(9).littleEndian) { nested.append(contentsOf: $0) }
                          withUnsafeBytes(of: UInt64(1).littleEndian) { nested.append(contentsOf: $0) } }
        let deep = try gguf(kv: 1, body: Self.kv("general.deep", type: 9, nested))
        expect([deep.path, "nested"]) { _ = try GGUFFile(deep) }
        let notGGUF = tmp.path("not.gguf")
        try Data("GGML but not really".utf8).write(to: notGGUF)
        expect([notGGUF.path, "magic"]) { _ = try GGUFFile(notGGUF) }
    }

    // MARK: datasets, tokenizers, checkpoints

    func testDatasetsAndTokenizers() throws {
        let text = tmp.path("text.h5")
        try Data("input_ids,1,2,3\n".utf8).write(to: text)
        expect([text.path, "HDF5"]) { _ = try TokenDataset(text, vocabSize: 10) }
        let noIds = TrainerTests.datasets.appendingPathComponent("no_input_ids.h5")
        expect([noIds.path, "input_ids"]) { _ = try TokenDataset(noIds, vocabSize: 10) }
        // Found by scripts/fuzz.sh (dataset target): a header claiming an extent whose element count overflows.
        let huge = TrainerTests.datasets.appendingPathComponent("fuzz_huge_extent.h5")
        expect([huge.path, "input_ids", "corrupt"]) { _ = try TokenDataset(huge, vocabSize: 10) }
        // Also from the fuzzer: a compact dataset storing fewer bytes than its shape (HDF5 1.10 would read past them).
        let compact = TrainerTests.datasets.appendingPathComponent("fuzz_compact_short.h5")
        expect([compact.path, "input_ids", "compact", "corrupt"]) { _ = try TokenDataset(compact, vocabSize: 10) }
        expect([tmp.path("absent.h5").path]) { _ = try TokenDataset(tmp.path("absent.h5"), vocabSize: 10) }
        // A corrupt size of the "format" string in the global heap: HDF5 1.10 itself crashes (2^40) or loops
        // forever (1000) reading it; the attributes are read in a child process, so either is an error here.
        let packed = try Data(contentsOf: TrainerTests.datasets.appendingPathComponent("rows_int64.h5"))
        let heap = try XCTUnwrap(packed.range(of: Data("GCOL".utf8))).lowerBound
        XCTAssertEqual(packed[(heap + 32)..<(heap + 47)], Data("longtune-packed".utf8), "the first heap object")
        for (size, words) in [(UInt64(1) << 40, ["crashed"]), (1000, ["did not finish"])] {
            var bytes = packed
            withUnsafeBytes(of: size.littleEndian) { bytes.replaceSubrange((heap + 24)..<(heap + 32), with: $0) }
            let url = tmp.path("heap\(size).h5")
            try bytes.write(to: url)
            expect([url.path, "attributes", "corrupt"] + words) { _ = try TokenDataset(url, vocabSize: 10) }
        }
        // Found by scripts/fuzz.sh (dataset target): a damaged symbol table crashed HDF5 inside H5Lexists.
        let symbols = TrainerTests.datasets.appendingPathComponent("fuzz_symbol_table.h5")
        expect([symbols.path, "corrupt", "crashed"]) { _ = try TokenDataset(symbols, vocabSize: 10) }
        let gpt2 = try JSONSerialization.jsonObject(
            with: Data(contentsOf: BadInputTests.tokenizerFixtures.appendingPathComponent("gpt2/tokenizer.json"))) as! [String: Any]
        func tokenizer(_ edit: (inout [String: Any]) -> Void) throws -> URL {
            var json = gpt2
            edit(&json)
            let url = tmp.path("tok\(tried).json")
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            return url
        }
        let hugeId = try tokenizer { j in
            var m = j["model"] as! [String: Any]; var v = m["vocab"] as! [String: Int]
            v["!"] = 1 << 40; m["vocab"] = v; j["model"] = m
        }
        expect([hugeId.path, "model.vocab"]) { _ = try Tokenizer(path: hugeId.path) }
        let negativeAdded = try tokenizer { $0["added_tokens"] = [["content": "<x>", "id": -5]] }
        expect([negativeAdded.path, "added_tokens"]) { _ = try Tokenizer(path: negativeAdded.path) }
        let unigram = try tokenizer { j in var m = j["model"] as! [String: Any]; m["type"] = "Unigram"; j["model"] = m }
        expect([unigram.path, "BPE"]) { _ = try Tokenizer(path: unigram.path) }
        let broken = tmp.path("broken.json")
        try Data("{\"model\": ".utf8).write(to: broken)
        expect([broken.path, "JSON"]) { _ = try Tokenizer(path: broken.path) }
    }

    func testCheckpoints() throws {
        let run = tmp.path("run")
        let r = try Recipe.load(TrainerTests.tinyRecipe, overrides: [
            "training.steps=4", "model.context_length=64", "logging.eval_every=0", "checkpoints.dir=\(run.path)"])
        try Trainer(recipe: r, log: { _ in }).run()
        let ck = run.appendingPathComponent("step-000004")
        // Resuming from a damaged checkpoint: moments of another shape (AdamW would write past them), a negative step.
        let optimizer = ck.appendingPathComponent("optimizer.safetensors")
        let original = try Data(contentsOf: optimizer)
        let moments = try SafetensorsFile(optimizer)
        let shrunk = try moments.names.map { n -> (String, Tensor) in
            let t = try moments.tensor(n)
            return (n, n.hasPrefix("v.") ? Tensor(zeros: [1]) : t)
        }
        try SafetensorsFile.write(shrunk, dtype: .fp32, to: optimizer)
        expect([optimizer.path, "v.", "shape", "earlier"]) { _ = try Trainer(recipe: r, resume: ck.path, log: { _ in }) }
        try original.write(to: optimizer)
        let stateURL = ck.appendingPathComponent("state.json")
        let goodState = try Data(contentsOf: stateURL)
        var negative = try JSONSerialization.jsonObject(with: goodState) as! [String: Any]
        negative["step"] = -3
        try JSONSerialization.data(withJSONObject: negative).write(to: stateURL)
        expect([stateURL.path, "step -3", "negative"]) { _ = try Trainer(recipe: r, resume: ck.path, log: { _ in }) }
        try goodState.write(to: stateURL)
        XCTAssertNoThrow(try Trainer(recipe: r, resume: ck.path, log: { _ in }), "the restored checkpoint resumes")
        // Another rank's adapter: merging names the tensor and the shapes.
        let adapter = try SafetensorsFile(ck.appendingPathComponent("adapter.safetensors"))
        let reranked = try adapter.names.map { n -> (String, Tensor) in
            let t = try adapter.tensor(n)
            guard n.hasSuffix("lora_A.weight") else { return (n, t) }
            return (n, Tensor(zeros: [4, t.shape[1]]))
        }
        try SafetensorsFile.write(reranked, dtype: .fp32, to: ck.appendingPathComponent("adapter.safetensors"))
        expect([ck.path, "lora_A.weight", "shape"]) { _ = try Merge.run(checkpoint: ck, out: self.tmp.path("m1"), dtype: .fp16) }
        expect([ck.path, "lora_A.weight", "shape"]) { _ = try Checkpoint.trainedModel(ck) }
        // state.json damaged or missing a field.
        let state = ck.appendingPathComponent("state.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: state)) as! [String: Any]
        json["step"] = nil
        try JSONSerialization.data(withJSONObject: json).write(to: state)
        expect([state.path, "step"]) { _ = try Checkpoint.read(ck) }
        try Data("{".utf8).write(to: state)
        expect([state.path, "JSON"]) { _ = try Checkpoint.read(ck) }
        try FileManager.default.removeItem(at: state)
        expect([ck.path, "state.json"]) { _ = try Checkpoint.read(ck) }
    }

    // MARK: the command line

    func testCommandLineValues() throws {
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("longtune")
        guard FileManager.default.fileExists(atPath: exe.path) else { throw XCTSkip("longtune binary not built next to the tests") }
        let model = BadInputTests.llamaFixtures.appendingPathComponent("default_gqa").path
        let data = TrainerTests.datasets.appendingPathComponent("default_gqa_tokens.h5").path
        let tok = BadInputTests.tokenizerFixtures.appendingPathComponent("gpt2").path
        let text = tmp.path("doc.txt")
        try "some text to pack".write(to: text, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["pack", "--tokenizer", tok, "--seq-len", "4", "--out", tmp.path("p.h5").path, "--eos", "99999", text.path], "--eos"),
            (["pack", "--tokenizer", tok, "--seq-len", "1", "--out", tmp.path("p.h5").path, text.path], "--seq-len"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "0"], "--context"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "abc"], "--context"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "8", "--stride", "0"], "--stride"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "8", "--rope-scaling", "{bad"], "--rope-scaling"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "8",
              "--rope-scaling", #"{"rope_type":"linear","factor":-1}"#], "--rope-scaling"),
            (["report", tmp.path("nowhere").path], "nowhere"),
            (["report", tmp.url.path, "--every", "0"], "--every"),
            (["train", TrainerTests.tinyRecipe.path, "--set", "logging.every=0"], "logging.every"),
            (["merge", tmp.path("no-checkpoint").path, "--out", tmp.path("m").path], "no-checkpoint"),
            (["import-gguf", tmp.path("none.gguf").path, "--out", tmp.path("g").path], "none.gguf"),
            (["eval", "streaming", "--model", model, "--data", data, "--window", "4", "--offset", "5",
              "--tokens", "9223372036854775807"], "lower --tokens or --offset"),
            (["eval", "perplexity", "--model", model, "--data", data, "--context", "1000000000"],
             "--context 1000000000: the forward pass needs"),
            (["generate", "--model", model, "--prompt", "hi", "--sinks", "4"], "--sinks 4 needs --window"),
            (["generate", "--model", model, "--prompt", "hi", "--max-tokens", "0"], "--max-tokens"),
            (["generate", "--model", model, "--prompt", "hi", "--top-p", "2"], "--top-p"),
            (["generate", "--model", model, "--prompt", "hi", "--temperature", "-1"], "--temperature"),
            (["generate", "--model", model], "--prompt"),
            (["generate", "--model", model, "--prompt-file", tmp.path("nowhere.txt").path], "nowhere.txt"),
            (["generate", "--model", model, "--prompt", "hi"], "tokenizer.json"),
            (["generate", "--model", tok, "--prompt", "hi", "--chat"], "tokenizer_config.json"),
            (["bench", "train", "--model", "builtin:tiny", "--sequence-parallel", "0"], "--sequence-parallel"),
            (["--threads", "0", "bench", "machine"], "LONGTUNE_THREADS=0 (or --threads)"),
            (["bench", "machine", "--threads=many"], "expected a whole number of threads"),
            (["bench", "machine", "--threads"], "--threads"),
            (["bench", "train", "--model", "builtin:tiny", "--attention", "s2", "--sequence-parallel", "2"],
             "mpirun -np N, N a multiple of 2"),
        ]
        for (args, needle) in cases {
            tried += 1
            let p = Process(), err = Pipe()
            p.executableURL = exe; p.arguments = args
            p.standardOutput = FileHandle.nullDevice; p.standardError = err
            try p.run(); p.waitUntilExit()
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(p.terminationReason, .exit, "\(args): \(message)")
            XCTAssertNotEqual(p.terminationStatus, 0, "\(args)")
            XCTAssertTrue(message.contains(needle), "\(args): \"\(message)\" should mention \(needle)")
            XCTAssertFalse(message.contains("Fatal error"), "\(args) trapped: \(message)")
        }
    }
}
