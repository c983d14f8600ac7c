import Engine
import Foundation

/// Variable tracking, common-word and frequent-word extraction: RULER scripts/data/synthetic/variable_tracking.py,
/// common_words_extraction.py and freq_words_extraction.py, line for line.
extension RulerGenerator {
    static let uppercase = (65...90).map { String(UnicodeScalar($0)!) }
    static let lowercase = (97...122).map { String(UnicodeScalar($0)!) }

    // MARK: variable tracking

    /// main(): an in-context example generated at 500 tokens first, then the samples with it inserted.
    mutating func variableTrackingSamples(_ count: Int, chains: Int, hops: Int) throws -> [RulerSample] {
        let example = try variableTrackingRun(1, budget: 500, chains: chains, hops: hops, example: nil)[0]
        let exampleText = example.input + " " + example.outputs.joined(separator: " ") + "\n"
        return try variableTrackingRun(count, budget: maxLength, chains: chains, hops: hops, example: exampleText)
    }

    /// sys_vartrack_w_noise_random: without `example`, the in-context example itself (three-letter names, the value
    /// 12345, nothing to generate); with it, the samples.
    mutating func variableTrackingRun(_ count: Int, budget: Int, chains: Int, hops: Int,
                                      example: String?) throws -> [RulerSample] {
        let toGenerate = example == nil ? 0 : task.prompt.tokensToGenerate
        let step = example == nil ? 5 : (maxLength < 4096 ? 5 : 10)
        let exampleTokens = example.map(tokenCount) ?? 0
        let isExample = example == nil
        let perUnit = Double(tokenCount(try chainPrompt(step, chains, hops, isExample).text)) / Double(step)
        let units = try largestFitting(start: step, estimate: Int(Double(budget) / perUnit * 3), budget: budget,
                                       extraTokens: exampleTokens + toGenerate) { g, n in
            try g.chainPrompt(n, chains, hops, isExample).text
        }
        let marker = String(task.prompt.template.prefix(20))
        return try (0..<count).map { _ in
            let (text, names, length) = try fittingPrompt(units: units, step: step, budget: budget,
                                                          extraTokens: toGenerate) { g, n in
                var (text, names) = try g.chainPrompt(n, chains, hops, isExample)
                if let example, let cut = text.range(of: marker) {
                    text.insert(contentsOf: g.randomizedExample(example, hops: hops) + "\n", at: cut.lowerBound)
                }
                return (text, names)
            }
            return example == nil ? RulerSample(input: text, answerPrefix: "", outputs: names, length: length)
                : sample(text, outputs: names, length: length)
        }
    }

    /// generate_chains: `chains` chains of `hops` + 1 distinct names, the first assigned a five-digit value.
    mutating func variableChains(_ chains: Int, _ hops: Int, _ isExample: Bool) throws -> ([[String]], [[String]]) {
        let letters = isExample ? 3 : 5, hops = isExample ? min(10, hops) : hops
        var names = (0..<(hops + 1) * chains).map { _ in random.choices(Self.uppercase, k: letters).joined() }
        while Set(names).count < chains * (hops + 1) {
            names.append(random.choices(Self.uppercase, k: letters).joined())
        }
        guard names.count == chains * (hops + 1) else {   // RULER fails here too (an IndexError)
            throw LongTuneError("ruler vt: two variable names drawn alike; use another --seed")
        }
        var groups: [[String]] = [], lines: [[String]] = []
        for start in stride(from: 0, to: names.count, by: hops + 1) {
            let group = Array(names[start..<start + hops + 1])
            let value = isExample ? "12345" : String(numpyRandom.randint(10000, 99999))
            groups.append(group)
            lines.append(["VAR \(group[0]) = \(value)"] + (0..<hops).map { "VAR \(group[$0 + 1]) = VAR \(group[$0]) " })
        }
        return (groups, lines)
    }

    /// generate_input_output with the noise haystack: the chains' lines at random places among `units` noise lines.
    mutating func chainPrompt(_ units: Int, _ chains: Int, _ hops: Int,
                              _ isExample: Bool) throws -> (text: String, value: [String]) {
        let (names, lines) = try variableChains(chains, hops, isExample)
        let value = lines[0][0].split(separator: "=").last!.trimmingCharacters(in: .whitespaces)
        var sentences = Array(repeating: Self.noise, count: units)
        for chain in lines {
            for (j, at) in random.sampleIndices(sentences.count, chain.count).sorted().enumerated() {
                sentences.insert(chain[j], at: at + j)
            }
        }
        let context = sentences.joined(separator: "\n").replacingOccurrences(of: ". \n", with: ".\n")
        let bare = task.prompt.template + task.prompt.answerPrefix
        let template = isExample ? bare : self.template
        return (pythonFormat(template, ["context": context, "query": value, "num_v": String(hops + 1)]), names[0])
    }

    /// randomize_icl: the example's names and value replaced by fresh random ones.
    mutating func randomizedExample(_ example: String, hops: Int) -> String {
        var text = example
        let words = example.split(whereSeparator: { $0.unicodeScalars.allSatisfy { RulerWords.isPythonSpace($0) } })
        for name in words.suffix(hops + 1) {
            let fresh = random.choices(Self.uppercase, k: name.count).joined()
            text = text.replacingOccurrences(of: String(name), with: fresh)
        }
        return text.replacingOccurrences(of: "12345", with: String(numpyRandom.randint(10000, 99999)))
    }

    // MARK: common words

    /// sys_word_pair_random: the number of distinct words that fits, then the samples.
    mutating func commonWordsSamples(_ count: Int, commonRepeats: Int, uncommonRepeats: Int,
                                     common: Int) throws -> [RulerSample] {
        var pool = RulerWords.commonWordPool
        var shuffler = PythonRandom(seed: seed)
        shuffler.shuffle(&pool)
        let repeats = maxLength < 4096 ? (6, 1) : (commonRepeats, uncommonRepeats)
        let toGenerate = task.prompt.tokensToGenerate, step = 10
        func prompt(_ g: inout RulerGenerator, _ n: Int) throws -> (text: String, value: [String]) {
            try g.wordListPrompt(n, pool: pool, repeats: repeats, common: common)
        }
        let perWord = Double(tokenCount(try prompt(&self, 4096).text)) / 4096
        let estimate = Int((Double(maxLength) / perWord).rounded(.down)) * 2
        let units = try largestFitting(start: step, estimate: estimate, budget: maxLength, extraTokens: toGenerate) {
            try prompt(&$0, $1).text
        }
        return try (0..<count).map { _ in
            let (text, answer, length) = try fittingPrompt(units: units, step: step, budget: maxLength,
                                                           extraTokens: toGenerate, make: prompt)
            return sample(text, outputs: answer, length: length)
        }
    }

    /// generate_input_output: one worked example (20 or 40 words), then the list of `words` words.
    mutating func wordListPrompt(_ words: Int, pool: [String], repeats: (Int, Int),
                                 common: Int) throws -> (text: String, value: [String]) {
        let short = maxLength < 4096
        let (exampleList, exampleAnswer) = try wordList(short ? 20 : 40, pool: pool, repeats: short ? (3, 1) : (10, 3),
                                                        common: common)
        let example = pythonFormat(template, ["context": exampleList, "query": ""]) + " "
            + numbered(exampleAnswer)
        let (list, answer) = try wordList(words, pool: pool, repeats: repeats, common: common)
        return (example + "\n" + pythonFormat(template, ["context": list, "query": ""]), answer)
    }

    /// get_example: `words` distinct words, the first `common` repeated more often, shuffled and numbered.
    mutating func wordList(_ words: Int, pool: [String], repeats: (Int, Int),
                           common: Int) throws -> (list: String, common: [String]) {
        guard words <= pool.count else {
            throw LongTuneError("ruler cwe: \(words) distinct words needed, wonderwords has \(pool.count) (RULER then "
                                + "uses english_words.json, not shipped); use a shorter context for cwe")
        }
        let picked = random.sample(pool, words)
        let top = Array(picked.prefix(common)), rest = Array(picked.dropFirst(common))
        var list = Array([[String]](repeating: top, count: repeats.0).joined())
            + Array([[String]](repeating: rest, count: repeats.1).joined())
        var shuffler = PythonRandom(seed: seed)
        shuffler.shuffle(&list)
        return (numbered(list), top)
    }

    func numbered(_ words: [String]) -> String {
        words.enumerated().map { "\($0.offset + 1). \($0.element)" }.joined(separator: " ")
    }

    // MARK: frequent words

    /// sys_kwext: the number of words that fits (found once), then each sample with a fresh coded vocabulary.
    mutating func frequentWordsSamples(_ count: Int, alpha: Double) throws -> [RulerSample] {
        let toGenerate = task.prompt.tokensToGenerate
        let budget = maxLength - toGenerate, vocabulary = budget / 50
        let words = try codedText(budget, words: -1, vocabulary: vocabulary, step: budget / 32, alpha: alpha).words
        return try (0..<count).map { _ in
            let (text, answer, _) = try codedText(budget, words: words, vocabulary: vocabulary, step: budget / 32,
                                              alpha: alpha)
            return sample(text, outputs: answer, length: tokenCount(text) + toGenerate)
        }
    }

    /// generate_input_output: a vocabulary of random six-letter words whose counts follow Zipf's law (ζ(α)), the
    /// most frequent replaced by "..."; with `words` ≤ 0 the largest count (by `step`) that fits `budget`.
    mutating func codedText(_ budget: Int, words: Int, vocabulary size: Int, step: Int,
                            alpha: Double) throws -> (text: String, answer: [String], words: Int) {
        var vocabulary = (0..<size).map { _ in random.choices(Self.lowercase, k: 6).joined() }
        while Set(vocabulary).count < size { vocabulary.append(random.choices(Self.lowercase, k: 6).joined()) }
        vocabulary = RulerWords.sortedUnique(vocabulary)
        var shuffler = PythonRandom(seed: seed)
        shuffler.shuffle(&vocabulary)
        vocabulary[0] = "..."
        func text(_ n: Int) -> String {
            var list: [String] = []
            for (k, word) in vocabulary.enumerated() {
                let copies = Double(n) * pow(Double(k + 1), -alpha) / Self.zeta(alpha)
                list += Array(repeating: word, count: Int(copies))
            }
            var shuffler = PythonRandom(seed: seed)
            shuffler.shuffle(&list)
            return pythonFormat(template, ["context": list.joined(separator: " "), "query": ""])
        }
        var n = words
        if n > 0 {
            while tokenCount(text(n)) > budget {
                n -= step
                guard n > 0 else { throw LongTuneError("ruler fwe: no coded text fits in \(budget) tokens") }
            }
        } else {
            n = budget / 6
            while tokenCount(text(n)) < budget { n += step }
            n -= step
        }
        return (text(n), Array(vocabulary[1..<4]), n)
    }

    /// scipy.special.zeta(α) for the one α RULER's fwe uses.
    static func zeta(_ alpha: Double) -> Double {
        precondition(alpha == 2, "ruler fwe: only alpha 2 is configured")
        return 1.6449340668482264
    }
}
