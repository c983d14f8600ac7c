/// The word pools RULER's generators draw from, built from wonderwords' lists (RulerWordLists) as RULER builds them.
enum RulerWords {
    static func lines(_ text: String) -> [String] { text.split(separator: "\n").map(String.init) }

    static let nouns = lines(RulerWordLists.nouns)
    static let adjectives = lines(RulerWordLists.adjectives)
    static let verbs = lines(RulerWordLists.verbs)

    /// niah.py's needle keys: sorted(set(f"{adj}-{noun}")), six million words, indexed without being built.
    static let adjectiveNouns = AdjectiveNouns(adjectives: adjectives, nouns: nouns)

    /// common_words_extraction.py's pool before its shuffle: sorted(set(nouns + adjs + verbs)).
    static let commonWordPool = sortedUnique(nouns + adjectives + verbs)

    /// The essay haystack's words: re.sub(r'\s+', " ", essay).split(" ").
    static let essayWords: [String] = {
        var words: [String] = [], current = "", inSpace = false
        for ch in RulerEssay.text.unicodeScalars {
            if isPythonSpace(ch) {
                if !inSpace { words.append(current); current = ""; inSpace = true }
            } else {
                current.unicodeScalars.append(ch)
                inSpace = false
            }
        }
        words.append(current)
        return words
    }()

    /// Python's `str.isspace` for the ASCII range (the texts are ASCII).
    static func isPythonSpace(_ c: Unicode.Scalar) -> Bool { (9...13).contains(c.value) || (28...32).contains(c.value) }

    /// Python's sorted(set(words)): code-point order, which is UTF-8 byte order.
    static func sortedUnique(_ words: [String]) -> [String] {
        var seen = Set<String>()
        return words.filter { seen.insert($0).inserted }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }
}

/// sorted(set(f"{adj}-{noun}" for adj in adjectives for noun in nouns)) by index. Adjectives sorted by `adj + "-"`
/// give the order of whole blocks of words, except where one adjective extends another by a hyphen ("well",
/// "well-known"): such a group's words interleave, and only that group is spelled out and sorted.
struct AdjectiveNouns {
    private enum Block { case adjective(String), spelled([String]) }
    private let blocks: [Block]
    private let starts: [Int]           // index of each block's first word
    private let nouns: [String]
    let count: Int

    init(adjectives: [String], nouns: [String]) {
        let nouns = RulerWords.sortedUnique(nouns)
        self.nouns = nouns
        let keyed = Array(Set(adjectives)).map { $0 + "-" }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var blocks: [Block] = [], starts: [Int] = [], total = 0, i = 0
        while i < keyed.count {
            var j = i + 1
            while j < keyed.count && keyed[j].utf8.starts(with: keyed[i].utf8) { j += 1 }
            starts.append(total)
            if j == i + 1 {
                blocks.append(.adjective(keyed[i]))
                total += nouns.count
            } else {
                let words = RulerWords.sortedUnique(keyed[i..<j].flatMap { adj in nouns.map { adj + $0 } })
                blocks.append(.spelled(words))
                total += words.count
            }
            i = j
        }
        self.blocks = blocks
        self.starts = starts
        count = total
    }

    subscript(index: Int) -> String {
        var lo = 0, hi = starts.count - 1    // the last block starting at or before `index`
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if starts[mid] <= index { lo = mid } else { hi = mid - 1 }
        }
        switch blocks[lo] {
        case .adjective(let head): return head + nouns[index - starts[lo]]
        case .spelled(let words): return words[index - starts[lo]]
        }
    }
}

/// LongTune's sentence splitter for the essay haystack, in place of NLTK's Punkt model (which needs a download): a
/// sentence ends after a word ending in . ! or ? (closing quotes, brackets or underscores aside) when the next word
/// starts with a capital letter or a digit (opening ones aside). Joining the sentences with spaces gives the text back.
enum SentenceSplitter {
    static func sentences(_ text: String) -> [String] {
        let words = text.split(separator: " ", omittingEmptySubsequences: false)
        var sentences: [String] = [], start = 0
        for i in words.indices.dropLast() where endsSentence(words[i]) && startsSentence(words[i + 1]) {
            sentences.append(words[start...i].joined(separator: " "))
            start = i + 1
        }
        sentences.append(words[start...].joined(separator: " "))
        return sentences
    }

    static func endsSentence(_ word: Substring) -> Bool {
        let core = word.reversed().drop { "\"')]_".contains($0) }
        return core.first.map { ".!?".contains($0) } ?? false
    }

    static func startsSentence(_ word: Substring) -> Bool {
        guard let c = word.drop(while: { "\"'([_".contains($0) }).unicodeScalars.first else { return false }
        return ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }
}
