import ArgumentParser
import Datasets
import Engine
import Evaluation
import Foundation
import Llama

/// `longtune generate`: prompt the model and stream what it writes.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text after a prompt on a KV cache (optionally attention sinks + a window).",
        discussion: """
            The text streams to stdout as it is decoded; timings and cache memory go to stderr at the end. \
            Generation stops at the model's EOS (config.json / generation_config.json eos_token_id, the \
            tokenizer's EOS, and with --chat the end of the assistant's turn) or after --max-tokens.
            """)

    @OptionGroup var source: EvalModel
    @Option(help: "The prompt text.") var prompt: String?
    @Option(help: "Read the prompt from this file (UTF-8).") var promptFile: String?
    @Option(help: "Generate at most this many tokens.") var maxTokens = 256
    @Option(help: "0 = greedy; otherwise logits are divided by it before sampling.") var temperature = 0.0
    @Option(help: "Sample among the k most likely tokens.") var topK: Int?
    @Option(help: "Sample among the most likely tokens holding this much probability (nucleus).") var topP: Double?
    @Option(help: "Seed of the sampling.") var seed: UInt64 = 0
    @Flag(help: """
        Wrap the prompt in the model's chat format (ChatML, Llama 3 or Mistral [INST], \
        from tokenizer_config.json).
        """)
    var chat = false
    @Option(help: "Keep the first S tokens in the cache however long it grows (attention sinks; needs --window).")
    var sinks = 0
    @Option(help: """
        Keep only the W most recent tokens (besides the sinks): memory stays flat, \
        positions stay below S + W.
        """)
    var window: Int?
    @Option(help: "Prompt tokens per forward pass of the prefill.") var prefillChunk = 512
    @Flag(help: "Do not stop at EOS: always generate --max-tokens tokens (for measurements).") var ignoreEos = false
    @Flag(help: "Print one JSON object (tokens, text, timings) instead of streaming the text.") var json = false

    func run() throws {
        let settings = try GenerationSettings(
            maxTokens: maxTokens,
            sampling: try SamplingSettings(temperature: temperature, topK: topK, topP: topP, seed: seed),
            cache: try CachePolicy(sinks: sinks, window: window), prefillChunk: prefillChunk)
        let text = try promptText()
        let tokenizer = try Tokenizer(path: source.model)
        let (ids, stops) = try Generation.prompt(text, directory: URL(fileURLWithPath: source.model),
                                                 tokenizer: tokenizer, chat: chat)
        var run = settings
        run.stopTokens = ignoreEos ? [] : stops
        let lm = try source.load()
        var stream = UTF8Stream()
        let out = FileHandle.standardOutput
        let (tokens, stats) = try Generation.run(model: lm, prompt: ids, settings: run) { token in
            guard !json, !stops.contains(token) else { return }
            out.write(Data(stream.push(tokenizer.bytes([token])).utf8))
        }
        if json {
            let shown = tokens.filter { !stops.contains($0) }
            let text = String(decoding: tokenizer.bytes(shown), as: UTF8.self)
            let report = GenerationReport(promptTokens: ids, tokens: tokens, text: text, stats: stats,
                                          cache: settings.cache.description)
            out.write(try report.json + Data("\n".utf8))
        } else {
            out.write(Data((stream.finish() + "\n").utf8))
        }
        let summary = stats.summary(cache: settings.cache)
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }

    func promptText() throws -> String {
        switch (prompt, promptFile) {
        case (let p?, nil): return p
        case (nil, let file?):
            guard let data = FileManager.default.contents(atPath: file) else {
                throw LongTuneError("--prompt-file \(file): cannot read it")
            }
            guard let text = String(data: data, encoding: .utf8) else {
                throw LongTuneError("--prompt-file \(file): not UTF-8 text")
            }
            return text
        case (nil, nil): throw LongTuneError("give the prompt: --prompt TEXT or --prompt-file FILE")
        case (_?, _?): throw LongTuneError("--prompt and --prompt-file: give one of the two")
        }
    }
}
