import Foundation

/// The Mersenne Twister (MT19937) as CPython's `random` module and NumPy's legacy `RandomState` use it, so that
/// RULER's task generators, ported to Swift, draw the same numbers for the same seed (docs/RULER.md §Random numbers).
struct MersenneTwister {
    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    /// `init_genrand`: NumPy's `RandomState.seed(n)` for an integer n.
    init(genrand seed: UInt32) {
        state[0] = seed
        for i in 1..<624 { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
    }

    /// `init_by_array`: CPython's `random.seed(n)` for an integer n ≥ 0 (the key is n's 32-bit words, low first).
    init(pythonSeed seed: UInt64) {
        self.init(genrand: 19_650_218)
        var key = [UInt32(truncatingIfNeeded: seed)]
        if seed >> 32 != 0 { key.append(UInt32(seed >> 32)) }
        var i = 1, j = 0
        for _ in 0..<max(624, key.count) {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_664_525)) &+ key[j] &+ UInt32(j)
            i += 1; j += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
            if j >= key.count { j = 0 }
        }
        for _ in 0..<623 {
            state[i] = (state[i] ^ ((state[i - 1] ^ (state[i - 1] >> 30)) &* 1_566_083_941)) &- UInt32(i)
            i += 1
            if i >= 624 { state[0] = state[623]; i = 1 }
        }
        state[0] = 0x8000_0000
    }

    /// `genrand_uint32`.
    mutating func next() -> UInt32 {
        if index >= 624 { twist() }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        return y ^ (y >> 18)
    }

    private mutating func twist() {
        for k in 0..<624 {
            let y = (state[k] & 0x8000_0000) | (state[(k + 1) % 624] & 0x7FFF_FFFF)
            state[k] = state[(k + 397) % 624] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_B0DF)
        }
        index = 0
    }
}

/// CPython's `random.Random` (3.11): the methods RULER's generators call, each drawing exactly as CPython does.
struct PythonRandom {
    private var mt: MersenneTwister

    init(seed: UInt64) { mt = MersenneTwister(pythonSeed: seed) }

    /// `random()`: 53 random bits as a double in [0, 1).
    mutating func random() -> Double {
        let a = Double(mt.next() >> 5), b = Double(mt.next() >> 6)
        return (a * 67_108_864 + b) / 9_007_199_254_740_992
    }

    /// `getrandbits(k)`: 32-bit words from the least significant up; the last word keeps its top bits.
    mutating func bits(_ k: Int) -> [UInt32] {
        precondition(k > 0)
        var words: [UInt32] = [], left = k
        while left > 0 {
            let r = mt.next()
            words.append(left < 32 ? r >> (32 - left) : r)
            left -= 32
        }
        return words
    }

    /// `_randbelow_with_getrandbits(n)`: k = n.bit_length() bits, redrawn while ≥ n.
    mutating func below(_ n: Int) -> Int {
        precondition(n > 0 && n <= 1 << 62)
        let k = Int.bitWidth - n.leadingZeroBitCount
        while true {
            let w = bits(k)
            let r = Int(w[0]) | (w.count > 1 ? Int(w[1]) << 32 : 0)
            if r < n { return r }
        }
    }

    /// `randint(a, b)`, both ends included.
    mutating func randint(_ a: Int, _ b: Int) -> Int { a + below(b - a + 1) }

    /// `choice(seq)`.
    mutating func choice<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// `choices(population, k=k)` without weights: floor(random() · n) for each pick.
    mutating func choices<T>(_ items: [T], k: Int) -> [T] {
        (0..<k).map { _ in items[Int((random() * Double(items.count)).rounded(.down))] }
    }

    /// `shuffle(x)`: Fisher–Yates from the end.
    mutating func shuffle<T>(_ items: inout [T]) {
        for i in stride(from: items.count - 1, through: 1, by: -1) { items.swapAt(i, below(i + 1)) }
    }

    /// `sample(population, k)` of a population of `n` items, as indices: CPython picks from a shrinking pool when n
    /// is small against k, and otherwise redraws indices already taken.
    mutating func sampleIndices(_ n: Int, _ k: Int) -> [Int] {
        precondition(k >= 0 && k <= n, "sample larger than population")
        var setSize = 21
        if k > 5 { setSize += Int(pow4(ceilLog4(Double(k * 3)))) }
        if n <= setSize {
            var pool = Array(0..<n), result: [Int] = []
            for i in 0..<k {
                let j = below(n - i)
                result.append(pool[j])
                pool[j] = pool[n - i - 1]
            }
            return result
        }
        var selected = Set<Int>(), result: [Int] = []
        for _ in 0..<k {
            var j = below(n)
            while selected.contains(j) { j = below(n) }
            selected.insert(j)
            result.append(j)
        }
        return result
    }

    mutating func sample<T>(_ items: [T], _ k: Int) -> [T] { sampleIndices(items.count, k).map { items[$0] } }

    /// `math.ceil(math.log(x, 4))` as CPython computes it (log x / log 4 in doubles).
    private func ceilLog4(_ x: Double) -> Double { (log(x) / log(4.0)).rounded(.up) }
    private func pow4(_ e: Double) -> Double { pow(4.0, e) }
}

/// NumPy's legacy `RandomState` (`np.random.seed(n)`, then `np.random.randint(low, high)` with the default int64):
/// masked rejection sampling of 32-bit draws.
struct NumpyLegacyRandom {
    private var mt: MersenneTwister

    init(seed: UInt32) { mt = MersenneTwister(genrand: seed) }

    /// `randint(low, high)`: high excluded; ranges below 2³² only (all RULER asks for).
    mutating func randint(_ low: Int, _ high: Int) -> Int {
        let range = UInt32(high - 1 - low)
        guard range > 0 else { return low }
        var mask = range
        for shift in [1, 2, 4, 8, 16] { mask |= mask >> UInt32(shift) }
        while true {
            let v = mt.next() & mask
            if v <= range { return low + Int(v) }
        }
    }
}
