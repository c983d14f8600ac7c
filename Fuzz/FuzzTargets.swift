// libFuzzer entry point for LongTune's parsers (built by scripts/fuzz.sh, not by SwiftPM).
// FUZZ_TARGET picks the parser: safetensors, gguf (also as a model's frozen base), config, tokenizer, recipe,
// dataset (HDF5), chat (tokenizer_config.json's chat template), bnb (a bitsandbytes 4-bit model.safetensors
// beside the fixture's config.json, loaded kept in NF4). Each input is written to a
// file and handed to the parser as a user's file would be; an error thrown is the expected outcome,
// a trap, a hang or a leak is a finding.
import Datasets
import Engine
import Formats
import Foundation
import Llama
import Training

let target = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? "safetensors"
let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("longtune-fuzz-\(getpid())")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let data = Data(bytes: bytes, count: size)
    try? FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    let names = ["tokenizer": "tokenizer.json", "chat": "tokenizer_config.json", "dataset": "input.h5",
                 "bnb": "model.safetensors"]
    let file = scratch.appendingPathComponent(names[target] ?? "input")
    guard (try? data.write(to: file)) != nil else { return 0 }
    switch target {
    case "safetensors":
        if let st = try? SafetensorsFile(file) {
            for name in st.names where (st.entries[name].map { $0.end - $0.begin } ?? 0) < 1 << 20 {
                _ = try? st.tensor(name)
            }
        }
    case "gguf":
        if let g = try? GGUFFile(file) {
            for name in g.tensorOrder where (g.tensors[name].flatMap { checkedProduct($0.dims) } ?? Int.max) < 1 << 20 {
                _ = try? g.tensor(name)
            }
            if let c = try? GGUFImport.config(from: g),
               LlamaForCausalLM(config: c).parameterShapes().reduce(0, { $0 + ($1.1.reduce(1, *)) }) < 1 << 22 {
                _ = try? LlamaForCausalLM(gguf: g)
            }
        }
    case "bnb":
        let config = scratch.appendingPathComponent("config.json")
        if !FileManager.default.fileExists(atPath: config.path) {
            try? FileManager.default.copyItem(atPath: "Tests/LlamaTests/Fixtures/bnb/nf4/config.json", toPath: config.path)
        }
        _ = try? LlamaForCausalLM(directory: try ModelDirectory(scratch), quantization: Quantization())
    case "config":
        if let c = try? LlamaConfig.load(file) {
            _ = LlamaForCausalLM(config: c).parameterShapes()
            _ = RopeFrequencies(scaling: c.ropeScaling, theta: c.ropeTheta, rotaryDim: c.rotaryDim,
                                maxPositionEmbeddings: c.maxPositionEmbeddings, sequenceLength: 2 * c.maxPositionEmbeddings)
        }
    case "tokenizer":
        if let t = try? Tokenizer(path: file.path) {
            let ids = t.encode("Hello, world! 123 héllo\n\tcode()")
            _ = t.decode(ids)
        }
    case "recipe":
        if let r = try? Recipe.load(file, overrides: ["training.steps=3"]) {
            _ = Recipe.explain(values: r)
            _ = (0..<r.training.steps).map { r.lrScale(step: $0) }
        }
    case "dataset":
        if let ds = try? TokenDataset(file, vocabSize: 50_000), ds.totalTokens < 1 << 22 {
            _ = try? ds.tokens(offset: 0, count: min(ds.totalTokens, 4096))
            if ds.rowLength != nil { _ = try? ds.row(0); _ = try? ds.optionalRow("document_ids", 0) }
        }
    case "chat":
        if let format = try? ChatFormat.detect(directory: scratch) {
            var stream = UTF8Stream()
            _ = stream.push(Array(format.prompt(user: "Hi\n").utf8.prefix(7))) + stream.finish()
        }
    default:
        fatalError("FUZZ_TARGET must be safetensors, gguf, config, tokenizer, recipe, dataset, chat or bnb")
    }
    return 0
}
