import Engine
import Foundation

/// The needle-in-a-haystack family: RULER scripts/data/synthetic/niah.py, line for line.
struct NeedleSettings {
    enum Haystack { case noise, essay, needle }
    enum Kind: String { case words, numbers, uuids }

    var haystack: Haystack
    var key: Kind
    var value: Kind
    var keys = 1, values = 1, queries = 1
}

extension RulerGenerator {
    static let noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    static let needle = "One of the special magic {type_needle_v} for {key} is: {value}."
    /// Depths (percent) at which essay needles go: np.round(np.linspace(0, 100, num=40)).astype(int).
    static let depths: [Int] = (0..<40).map { i in
        i == 39 ? 100 : Int((Double(i) * (100.0 / 39.0)).rounded(.toNearestOrEven))
    }

    mutating func needleSamples(_ count: Int, _ s: NeedleSettings) throws -> [RulerSample] {
        let toGenerate = task.prompt.tokensToGenerate
        var step = s.haystack == .essay ? 500 : 25
        if s.haystack != .essay && maxLength < 4096 { step = 5 }
        let perUnit = Double(tokenCount(needlePrompt(step, s).text)) / Double(step)
        let estimate = Int(Double(maxLength) / perUnit * 3)
        let units = largestFitting(start: step, estimate: estimate, budget: maxLength,
                                   extraTokens: toGenerate) { g, n in
            g.needlePrompt(n, s).text
        }
        return try (0..<count).map { _ in
            let (text, answers, length) = try fittingPrompt(units: units, step: step, budget: maxLength,
                                                                extraTokens: toGenerate) { g, n in
                g.needlePrompt(n, s)
            }
            return sample(text, outputs: answers, length: length)
        }
    }

    /// One random key, value or distractor of `kind` (generate_random).
    mutating func randomNeedle(_ kind: NeedleSettings.Kind) -> String {
        switch kind {
        case .numbers: return String(random.randint(1_000_000, 9_999_999))
        case .words: return RulerWords.adjectiveNouns[random.below(RulerWords.adjectiveNouns.count)]
        case .uuids: return uuid4(random.bits(128))
        }
    }

    /// generate_input_output: the prompt with `units` haystack units (words of the essay, noise sentences or
    /// distractor needles), and the expected answers.
    mutating func needlePrompt(_ units: Int, _ s: NeedleSettings) -> (text: String, value: [String]) {
        var keys: [String] = [], values: [[String]] = [], needles: [String] = []
        for _ in 0..<max(s.keys, s.queries) {
            keys.append(randomNeedle(s.key))
            var value: [String] = []
            for _ in 0..<s.values {
                value.append(randomNeedle(s.value))
                needles.append(pythonFormat(Self.needle, ["type_needle_v": s.value.rawValue, "key": keys.last!,
                                                          "value": value.last!]))
            }
            values.append(value)
        }
        var shuffler = PythonRandom(seed: seed)
        shuffler.shuffle(&needles)
        let context = s.haystack == .essay ? essayContext(units, needles) : lineContext(units, needles, s)

        let picked = random.sampleIndices(max(s.keys, s.queries), s.queries)
        let queries = picked.map { keys[$0] }, answers = picked.flatMap { values[$0] }
        let query = queries.count > 1
            ? queries.dropLast().joined(separator: ", ") + ", and " + queries.last! : queries[0]
        var template = self.template, needleType = s.value.rawValue
        if s.queries * s.values == 1 {
            for (a, b) in [("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")] {
                template = template.replacingOccurrences(of: a, with: b)
            }
            needleType.removeLast()
        }
        return (pythonFormat(template, ["type_needle_v": needleType, "context": context, "query": query]), answers)
    }

    /// The essay haystack's first `units` words (the essay repeated as needed), needles between its sentences at
    /// depths drawn from `depths`.
    mutating func essayContext(_ units: Int, _ needles: [String]) -> String {
        let words = RulerWords.essayWords
        let text = (0..<units).map { words[$0 % words.count] }.joined(separator: " ")
        let sentences = SentenceSplitter.sentences(text.trimmingCharacters(in: .whitespacesAndNewlines))
        let cuts = random.sample(Self.depths, needles.count)
            .map { Int(Double(sentences.count) * (Double($0) / 100)) }.sorted()
        let positions = [0] + cuts + [sentences.count]
        var parts: [String] = []
        for i in 1..<positions.count {
            parts.append(sentences[positions[i - 1]..<positions[i]].joined(separator: " "))
            if i - 1 < needles.count { parts.append(needles[i - 1]) }
        }
        return parts.joined(separator: " ")
    }

    /// Noise sentences or distractor needles, one per line, the needles inserted at random lines.
    mutating func lineContext(_ units: Int, _ needles: [String], _ s: NeedleSettings) -> String {
        var lines: [String]
        if s.haystack == .noise {
            lines = Array(repeating: Self.noise, count: units)
        } else {
            lines = (0..<units).map { _ in
                let key = randomNeedle(s.key)
                return pythonFormat(Self.needle, ["type_needle_v": s.value.rawValue, "key": key,
                                                  "value": randomNeedle(s.value)])
            }
        }
        let at = random.sampleIndices(units, needles.count).sorted(by: >)
        for (index, needle) in zip(at, needles) { lines.insert(needle, at: index) }
        return lines.joined(separator: "\n")
    }
}

/// str(uuid.UUID(int=getrandbits(128), version=4)): the version and variant bits set, 8-4-4-4-12 hex digits.
func uuid4(_ words: [UInt32]) -> String {
    var w = words                          // least significant word first
    w[1] = (w[1] & 0x3FFF_FFFF) | 0x8000_0000
    w[2] = (w[2] & 0xFFFF_0FFF) | 0x0000_4000
    let hex = Array(w.reversed().map { String(format: "%08x", $0) }.joined())
    return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(hex[$0]) }.joined(separator: "-")
}
