import Engine
import Foundation

/// RULER's generated tasks (Hsieh et al. 2024; NVIDIA/RULER scripts/synthetic.yaml): the needle-in-a-haystack
/// family, variable tracking, common-word and frequent-word extraction. docs/RULER.md describes them, what the port
/// follows line by line, and where it departs (the essay haystack's text and sentence splitter).
public enum RulerTask: String, CaseIterable, Codable, Sendable {
    case niahSingle1 = "niah_single_1", niahSingle2 = "niah_single_2", niahSingle3 = "niah_single_3"
    case niahMultikey1 = "niah_multikey_1", niahMultikey2 = "niah_multikey_2", niahMultikey3 = "niah_multikey_3"
    case niahMultivalue = "niah_multivalue", niahMultiquery = "niah_multiquery"
    case variableTracking = "vt", commonWords = "cwe", frequentWords = "fwe"

    /// What each task generates (synthetic.yaml's `args`).
    enum Kind {
        case needles(NeedleSettings)
        case variableTracking(chains: Int, hops: Int)
        case commonWords(commonRepeats: Int, uncommonRepeats: Int, common: Int)
        case frequentWords(alpha: Double)
    }

    var kind: Kind {
        switch self {
        case .niahSingle1: return .needles(.init(haystack: .noise, key: .words, value: .numbers))
        case .niahSingle2: return .needles(.init(haystack: .essay, key: .words, value: .numbers))
        case .niahSingle3: return .needles(.init(haystack: .essay, key: .words, value: .uuids))
        case .niahMultikey1: return .needles(.init(haystack: .essay, key: .words, value: .numbers, keys: 4))
        case .niahMultikey2: return .needles(.init(haystack: .needle, key: .words, value: .numbers))
        case .niahMultikey3: return .needles(.init(haystack: .needle, key: .uuids, value: .uuids))
        case .niahMultivalue: return .needles(.init(haystack: .essay, key: .words, value: .numbers, values: 4))
        case .niahMultiquery: return .needles(.init(haystack: .essay, key: .words, value: .numbers, queries: 4))
        case .variableTracking: return .variableTracking(chains: 1, hops: 4)
        case .commonWords: return .commonWords(commonRepeats: 30, uncommonRepeats: 3, common: 10)
        case .frequentWords: return .frequentWords(alpha: 2.0)
        }
    }

    /// The task's template, answer prefix and generation length (RULER scripts/data/synthetic/constants.py).
    struct Prompt { let template: String, answerPrefix: String, tokensToGenerate: Int }

    var prompt: Prompt {
        switch kind {
        case .needles: return Prompt(
            template: "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize "
                + "it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special "
                + "magic {type_needle_v} for {query} mentioned in the provided text?",
            answerPrefix: " The special magic {type_needle_v} for {query} mentioned in the provided text are",
            tokensToGenerate: 128)
        case .variableTracking: return Prompt(
            template: "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
                + "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above.",
            answerPrefix: " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
                + "variables are assigned the value {query}, they are: ",
            tokensToGenerate: 30)
        case .commonWords: return Prompt(
            template: "Below is a numbered list of words. In these words, some appear more often than others. "
                + "Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words "
                + "in the above list?",
            answerPrefix: " Answer: The top 10 words that appear most often in the list are:",
            tokensToGenerate: 120)
        case .frequentWords: return Prompt(
            template: "Read the following coded text and track the frequency of each coded word. Find the three most "
                + "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
                + "the dots '....'. What are the three most frequently appeared words in the above coded text?",
            answerPrefix: " Answer: According to the coded text above, the three most frequently appeared words are:",
            tokensToGenerate: 50)
        }
    }
}

/// One generated sample, as RULER's generator writes it to its jsonl: the prompt up to the answer prefix, the prefix,
/// the expected answers, and the prompt's length in tokens plus the tokens to generate.
public struct RulerSample: Codable, Equatable, Sendable {
    public let input: String
    public let answerPrefix: String
    public let outputs: [String]
    public let length: Int

    enum CodingKeys: String, CodingKey { case input, outputs, length, answerPrefix = "answer_prefix" }
}

/// Generates a task's samples at one length exactly as RULER's script for it does with the same seed, tokenizer and
/// model template (prepare.py: the script's template is the model template around the task template, then the answer
/// prefix).
public struct RulerGenerator {
    let task: RulerTask
    let maxLength: Int                  // --max_seq_length: prompt tokens + tokens to generate
    let seed: UInt64
    let template: String                // model template around the task's, then the answer prefix
    let tokenCount: (String) -> Int
    var random: PythonRandom
    var numpyRandom: NumpyLegacyRandom

    /// `wrapper` is the model's template with `{task_template}` where the task's goes ("{task_template}": none).
    public init(task: RulerTask, maxLength: Int, seed: UInt64 = 42, wrapper: String = "{task_template}",
                tokenCount: @escaping (String) -> Int) {
        self.task = task
        self.maxLength = maxLength
        self.seed = seed
        template = wrapper.replacingOccurrences(of: "{task_template}", with: task.prompt.template)
            + task.prompt.answerPrefix
        self.tokenCount = tokenCount
        random = PythonRandom(seed: seed)
        numpyRandom = NumpyLegacyRandom(seed: UInt32(truncatingIfNeeded: seed))
    }

    /// `count` samples (the script's --num_samples).
    public mutating func samples(_ count: Int) throws -> [RulerSample] {
        switch task.kind {
        case .needles(let settings): return try needleSamples(count, settings)
        case .variableTracking(let chains, let hops):
            return try variableTrackingSamples(count, chains: chains, hops: hops)
        case .commonWords(let common, let uncommon, let n):
            return try commonWordsSamples(count, commonRepeats: common, uncommonRepeats: uncommon, common: n)
        case .frequentWords(let alpha): return try frequentWordsSamples(count, alpha: alpha)
        }
    }

    /// RULER's search for the largest haystack whose prompt fits (niah.py, variable_tracking.py and
    /// common_words_extraction.py share it): bisect from `start` units up to the scripts' own estimate.
    mutating func largestFitting(start: Int, estimate: Int, budget: Int, extraTokens: Int,
                                 prompt: (inout RulerGenerator, Int) throws -> String) rethrows -> Int {
        var lower = start, upper = max(estimate, start * 2)
        var best: Int? = nil
        while lower <= upper {
            let mid = (lower + upper) / 2
            if tokenCount(try prompt(&self, mid)) + extraTokens <= budget {
                best = mid
                lower = mid + 1
            } else {
                upper = mid - 1
            }
        }
        return best ?? start
    }

    /// The sample loop of RULER's scripts: generate with `units`, and while the prompt is too long retry with
    /// `step` fewer; at `step` or fewer, RULER retries with new draws for ever, this a hundred times.
    mutating func fittingPrompt<T>(units: Int, step: Int, budget: Int, extraTokens: Int,
                                   make: (inout RulerGenerator, Int) throws -> (text: String, value: T))
        throws -> (text: String, value: T, length: Int) {
        var used = units, triesAtLeast = 0
        while true {
            let (text, value) = try make(&self, used)
            let length = tokenCount(text) + extraTokens
            if length <= budget { return (text, value, length) }
            if used > step {
                used -= step
            } else if triesAtLeast < 100 {
                triesAtLeast += 1
            } else {
                throw LongTuneError("ruler \(task.rawValue): no prompt fits in \(budget) tokens "
                                    + "(the shortest is \(length)); use a longer context")
            }
        }
    }

    /// Splits the finished prompt at the answer prefix, found by its first ten characters from the end.
    func sample(_ text: String, outputs: [String], length: Int) -> RulerSample {
        let marker = String(task.prompt.answerPrefix.prefix(10))
        guard let r = text.range(of: marker, options: .backwards) else {
            return RulerSample(input: text, answerPrefix: "", outputs: outputs, length: length)
        }
        return RulerSample(input: String(text[..<r.lowerBound]), answerPrefix: String(text[r.lowerBound...]),
                           outputs: outputs, length: length)
    }
}

/// Python's `str.format` for the named fields RULER's templates use: one pass, so braces in the values stay.
func pythonFormat(_ template: String, _ values: [String: String]) -> String {
    var out = "", rest = Substring(template)
    while let open = rest.firstIndex(of: "{") {
        out += rest[..<open]
        guard let close = rest[open...].firstIndex(of: "}"),
              let value = values[String(rest[rest.index(after: open)..<close])] else {
            out.append("{")
            rest = rest[rest.index(after: open)...]
            continue
        }
        out += value
        rest = rest[rest.index(after: close)...]
    }
    return out + rest
}
