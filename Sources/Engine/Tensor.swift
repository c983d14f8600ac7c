import Foundation

/// A dense fp32 tensor in row-major order. Storage is 64-byte aligned (one AVX-512 vector) and
/// counted in `MemoryStats`, so benchmarks can report the engine's own peak.
public final class Tensor {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = Tensor.allocate(count)
        data.initialize(repeating: 0, count: count)
    }

    /// An uninitialized tensor, for outputs a kernel overwrites completely.
    public init(uninitialized shape: [Int]) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = Tensor.allocate(count)
    }

    public convenience init(shape: [Int], _ values: [Float]) {
        precondition(values.count == shape.reduce(1, *),
                     "Tensor: \(values.count) values do not fill shape \(shape)")
        self.init(uninitialized: shape)
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// Deterministic uniform values in [lo, hi) from `rng`.
    public convenience init(shape: [Int], uniform lo: Float, _ hi: Float, rng: inout SplitMix64) {
        self.init(uninitialized: shape)
        for i in 0..<count { data[i] = lo + (hi - lo) * rng.nextFloat() }
    }

    deinit {
        MemoryStats.release(count * 4)
        BufferCache.release(data, count: max(count, 1))
    }

    /// Large tensors come from mmap and go back to the system when freed: glibc's default raises
    /// its mmap threshold after the first free, after which freed activations stay in the heap and
    /// the resident size keeps the high-water mark of every layer's recomputation.
    private static let allocatorConfigured: Bool = {
        #if os(Linux)
        _ = glibcMallopt(-3, 1 << 20)   // M_MMAP_THRESHOLD (fixed: disables the dynamic threshold)
        _ = glibcMallopt(-8, 2)         // M_ARENA_MAX
        #endif
        return true
    }()

    private static func allocate(_ n: Int) -> UnsafeMutablePointer<Float> {
        _ = allocatorConfigured
        MemoryStats.retain(n * 4)
        if let cached = BufferCache.take(count: max(n, 1)) { return cached }
        var raw: UnsafeMutableRawPointer?
        let bytes = max(n, 1) * 4
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        return raw.bindMemory(to: Float.self, capacity: max(n, 1))
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public func copy() -> Tensor {
        let t = Tensor(uninitialized: shape)
        t.data.update(from: data, count: count)
        return t
    }

    public func fill(_ value: Float) { data.update(repeating: value, count: count) }

    /// A copy of rows `r` (along the first dimension).
    public func rows(_ r: Range<Int>) -> Tensor {
        let width = count / shape[0]
        let t = Tensor(uninitialized: [r.count] + shape.dropFirst())
        t.data.update(from: data + r.lowerBound * width, count: r.count * width)
        return t
    }

    /// Overwrites rows first..<first + part.shape[0] with `part`.
    public func setRows(from first: Int, _ part: Tensor) {
        precondition(Array(part.shape.dropFirst()) == Array(shape.dropFirst()) && first + part.shape[0] <= shape[0],
                     "setRows: \(part.shape) does not fit rows from \(first) of \(shape)")
        (data + first * (count / shape[0])).update(from: part.data, count: part.count)
    }
}

/// Freed tensor buffers kept for reuse, by exact element count: a training step allocates the same
/// shapes layer after layer (and step after step), and reusing them avoids the page faults and
/// zeroing of fresh memory. Bounded so that live + cached bytes stay within the high-water mark of
/// live tensors (or `floorBytes` of cache, whichever is larger): the resident size stays near the
/// step's own peak instead of accumulating every shape ever freed.
public enum BufferCache {
    static let floorBytes = 1280 << 20
    static let minElements = 1 << 16            // small buffers go straight back to malloc
    nonisolated(unsafe) static var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    nonisolated(unsafe) static var cachedBytes = 0
    static let lock = NSLock()

    static func take(count: Int) -> UnsafeMutablePointer<Float>? {
        guard count >= minElements else { return nil }
        lock.lock(); defer { lock.unlock() }
        guard let p = free[count]?.popLast() else { return nil }
        cachedBytes -= count * 4
        return p
    }

    /// Returns every cached buffer to the system (after a throw-away computation such as a memory probe).
    public static func drain() {
        lock.lock(); defer { lock.unlock() }
        for (_, ps) in free { for p in ps { Foundation.free(p) } }
        free = [:]
        cachedBytes = 0
    }

    static func release(_ p: UnsafeMutablePointer<Float>, count: Int) {
        if count >= minElements {
            lock.lock()
            if cachedBytes + count * 4 <= Swift.max(floorBytes, MemoryStats.highWater - MemoryStats.liveBytes) {
                free[count, default: []].append(p)
                cachedBytes += count * 4
                lock.unlock()
                return
            }
            lock.unlock()
        }
        Foundation.free(p)
    }
}

#if os(Linux)
@_silgen_name("mallopt") private func glibcMallopt(_ param: Int32, _ value: Int32) -> Int32
#endif

/// Live and peak bytes of tensor storage.
public enum MemoryStats {
    nonisolated(unsafe) private static var live = 0
    nonisolated(unsafe) private static var peakBytes = 0
    nonisolated(unsafe) private static var highWaterBytes = 0
    private static let lock = NSLock()

    static func retain(_ bytes: Int) {
        lock.lock(); live += bytes
        if live > peakBytes { peakBytes = live; highWaterBytes = Swift.max(highWaterBytes, live) }
        lock.unlock()
    }
    static func release(_ bytes: Int) { lock.lock(); live -= bytes; lock.unlock() }

    public static var liveBytes: Int { lock.lock(); defer { lock.unlock() }; return live }
    public static var peak: Int { lock.lock(); defer { lock.unlock() }; return peakBytes }
    /// The largest live size since the process started (never reset).
    static var highWater: Int { lock.lock(); defer { lock.unlock() }; return highWaterBytes }
    /// Starts a new peak measurement from the current live size.
    public static func resetPeak() { lock.lock(); peakBytes = live; lock.unlock() }

    /// Peak resident set size of the process (VmHWM), in bytes.
    public static func processPeakRSS() -> Int { procStatus("VmHWM:") }
    /// Resets VmHWM to the current RSS (Linux ≥ 4.0); returns false where unsupported.
    @discardableResult public static func resetProcessPeakRSS() -> Bool {
        guard let fh = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? fh.close() }
        return (try? fh.write(contentsOf: Data("5".utf8))) != nil
    }

    private static func procStatus(_ key: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(key) {
            let kb = line.dropFirst(key.count).trimmingCharacters(in: .whitespaces).split(separator: " ").first
            return (Int(kb ?? "0") ?? 0) * 1024
        }
        return 0
    }
}

/// A small, fast, seedable generator (Steele, Lea & Flood's SplitMix64); its state is one UInt64,
/// so checkpoints can record it exactly.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Moves the stream `n` draws ahead in O(1) (the state advances by a constant per draw).
    public mutating func skip(_ n: Int) { state &+= UInt64(n) &* 0x9E37_79B9_7F4A_7C15 }
    /// Uniform in [0, 1) with 24 bits.
    public mutating func nextFloat() -> Float { Float(next() >> 40) * 0x1p-24 }
}
