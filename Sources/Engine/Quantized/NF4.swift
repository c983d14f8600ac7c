import Foundation

/// 4-bit NormalFloat storage exactly as bitsandbytes 0.50 writes it (docs/CONVENTIONS.md §14): blocks of
/// `blockSize` consecutive elements of the row-major matrix, each scaled by its absolute maximum and
/// rounded to the nearest of the 16 NF4 codes; two codes per byte, the first element in the high
/// nibble. With double quantization the per-block absmaxes are themselves stored as 8-bit codes.
public final class NF4Matrix: QuantizedMatrix {
    /// bitsandbytes' NF4 code book (sorted; index 7 is exactly 0).
    public static let codeBook: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
        -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
        0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]
    /// The block sizes bitsandbytes accepts for 4-bit storage.
    public static let validBlockSizes = [32, 64, 128, 256, 512, 1024, 2048, 4096]

    public let shape: [Int]
    public let blockSize: Int
    /// bitsandbytes' `compute_dtype`: bf16 dequantizes into bf16 for the bf16 GEMM (docs/CONVENTIONS.md §15).
    public var computeDType = ComputeDType.fp32
    /// ⌈n/2⌉ bytes of codes (an odd count ends with the code of 0 in the low nibble).
    public let packed: [UInt8]
    public let scales: BlockScales
    /// The dtype the dequantized values are rounded to: bitsandbytes' quant_state.dtype, the dtype the
    /// weight had when it was quantized (fp32 for weights quantized here).
    public let dtype: DType

    /// The per-block absmaxes, plain or double-quantized.
    public enum BlockScales {
        case plain([Float])
        case double(DoubleQuantizedScales)
    }

    public init(shape: [Int], blockSize: Int, packed: [UInt8], scales: BlockScales, dtype: DType) {
        self.shape = shape
        self.blockSize = blockSize
        self.packed = packed
        self.scales = scales
        self.dtype = dtype
    }

    public var count: Int { shape.reduce(1, *) }
    public var blockCount: Int { (count + blockSize - 1) / blockSize }
    public var kind: String { if case .double = scales { "nf4+dq" } else { "nf4" } }
    public var storedBytes: Int {
        if case .double = scales { return Self.storedBytes(count: count, blockSize: blockSize, doubleQuant: true) }
        return Self.storedBytes(count: count, blockSize: blockSize, doubleQuant: false)
    }

    /// Bytes of n elements in NF4: ⌈n/2⌉ of codes, then an fp32 absmax per block, or under double
    /// quantization an 8-bit code per block, an fp32 absmax per 256 blocks, the 256-entry map and the offset.
    public static func storedBytes(count n: Int, blockSize: Int, doubleQuant: Bool) -> Int {
        let blocks = (n + blockSize - 1) / blockSize
        let nested = (blocks + DoubleQuantizedScales.nestedBlockSize - 1) / DoubleQuantizedScales.nestedBlockSize
        return (n + 1) / 2 + (doubleQuant ? blocks + 4 * (nested + 256 + 1) : 4 * blocks)
    }

    /// An all-zero matrix, built without quantizing anything (memory probes run on it).
    public static func zeros(shape: [Int], blockSize: Int, doubleQuant: Bool) -> NF4Matrix {
        let n = shape.reduce(1, *), blocks = (n + blockSize - 1) / blockSize
        let nested = (blocks + DoubleQuantizedScales.nestedBlockSize - 1) / DoubleQuantizedScales.nestedBlockSize
        let scales: BlockScales = doubleQuant
            ? .double(DoubleQuantizedScales(codes: [UInt8](repeating: 0, count: blocks),
                                            nestedAbsmax: [Float](repeating: 0, count: nested), offset: 0,
                                            map: DynamicMap.signed))
            : .plain([Float](repeating: 0, count: blocks))
        return NF4Matrix(shape: shape, blockSize: blockSize, packed: [UInt8](repeating: 0x77, count: (n + 1) / 2),
                         scales: scales, dtype: .fp32)
    }

    /// The absmax of block `b` (decoded from its 8-bit code under double quantization).
    @inline(__always) public func absmax(_ b: Int) -> Float {
        switch scales {
        case .plain(let a): a[b]
        case .double(let d): d.value(b)
        }
    }

    // MARK: quantizing

    /// Quantizes `n` = shape.product floats; `doubleQuant` also quantizes the block absmaxes.
    /// Throws on a non-finite value (`name` identifies the tensor in the message).
    public static func quantize(_ x: UnsafePointer<Float>, shape: [Int], blockSize: Int = 64, doubleQuant: Bool,
                                name: String) throws -> NF4Matrix {
        let n = shape.reduce(1, *)
        guard validBlockSizes.contains(blockSize) else {
            throw LongTuneError("\(name): NF4 block size \(blockSize) is not one of \(validBlockSizes)")
        }
        if let bad = (0..<n).first(where: { !x[$0].isFinite }) {
            throw LongTuneError("\(name): element \(bad) is \(x[bad]); a weight with NaN or infinity cannot be "
                                + "quantized")
        }
        let blocks = (n + blockSize - 1) / blockSize
        var packed = [UInt8](repeating: 0x77, count: (n + 1) / 2)   // 7 is the code of 0 (the odd pad)
        var absmax = [Float](repeating: 0, count: blocks)
        packed.withUnsafeMutableBufferPointer { out in
            absmax.withUnsafeMutableBufferPointer { am in
                Parallel.chunks(blocks, minChunk: 256) { range in
                    for b in range {
                        am[b] = quantizeBlock(x, n: n, block: b, blockSize: blockSize, into: out.baseAddress!)
                    }
                }
            }
        }
        let scales: BlockScales = doubleQuant ? .double(DoubleQuantizedScales(absmax)) : .plain(absmax)
        return NF4Matrix(shape: shape, blockSize: blockSize, packed: packed, scales: scales, dtype: .fp32)
    }

    /// The midpoints between neighbouring codes, in fp32 as bitsandbytes computes them.
    static let midpoints: [Float] = (0..<15).map { (codeBook[$0] + codeBook[$0 + 1]) / 2 }

    /// bitsandbytes' rule: scale by 1/absmax (a full block) or divide by it (the last, partial block),
    /// clamp to [−1, 1], and take the number of midpoints strictly below the value (a tie goes down).
    private static func quantizeBlock(_ x: UnsafePointer<Float>, n: Int, block b: Int, blockSize: Int,
                                      into out: UnsafeMutablePointer<UInt8>) -> Float {
        let lo = b * blockSize, hi = min(n, lo + blockSize)
        var am: Float = 0
        for i in lo..<hi { am = max(am, abs(x[i])) }
        let partial = hi - lo < blockSize
        let divisor = max(am, 1e-38)
        let reciprocal = 1 / divisor
        for i in lo..<hi {
            let s = min(1, max(-1, partial ? x[i] / divisor : x[i] * reciprocal))
            var q: UInt8 = 0
            for m in midpoints where m < s { q += 1 }
            if i & 1 == 0 {
                out[i >> 1] = (q << 4) | (out[i >> 1] & 0x0F)
            } else {
                out[i >> 1] = (out[i >> 1] & 0xF0) | q
            }
        }
        return partial ? divisor : am
    }

    // MARK: dequantizing

    public func dequantize(into out: UnsafeMutablePointer<Float>) {
        let n = count, bs = blockSize
        packed.withUnsafeBufferPointer { codes in
            Parallel.chunks(blockCount, minChunk: 512) { range in
                var table = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
                withUnsafeMutableBytes(of: &table) { raw in
                    let t = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                    for b in range {
                        fillTable(t, absmax: absmax(b))
                        let lo = b * bs, hi = min(n, lo + bs)
                        decodeBlock(codes.baseAddress! + lo / 2, count: hi - lo, table: t, into: out + lo)
                    }
                }
            }
        }
    }

    /// The block's 16 possible values: code × absmax in fp32, rounded to `dtype` as bitsandbytes'
    /// output tensor rounds them.
    @inline(__always) private func fillTable(_ t: UnsafeMutablePointer<Float>, absmax a: Float) {
        for c in 0..<16 {
            let v = Self.codeBook[c] * a
            switch dtype {
            case .fp32: t[c] = v
            case .fp16: t[c] = floatFromFP16(fp16Bits(v))
            case .bf16: t[c] = floatFromBF16(bf16Bits(v))
            }
        }
    }

    @inline(__always) private func decodeBlock(_ codes: UnsafePointer<UInt8>, count: Int, table t: UnsafePointer<Float>,
                                               into out: UnsafeMutablePointer<Float>) {
        for j in 0..<(count / 2) {
            let byte = codes[j]
            out[2 * j] = t[Int(byte >> 4)]
            out[2 * j + 1] = t[Int(byte & 0x0F)]
        }
        if count & 1 == 1 { out[count - 1] = t[Int(codes[count / 2] >> 4)] }
    }
}

/// Double quantization of the NF4 block absmaxes (QLoRA §3): their mean is kept as `offset`, and the
/// absmaxes minus it are stored as 8-bit codes of bitsandbytes' dynamic map in blocks of 256, each block
/// scaled by its own absmax (`nestedAbsmax`).
public struct DoubleQuantizedScales {
    public static let nestedBlockSize = 256
    public let codes: [UInt8]
    public let nestedAbsmax: [Float]
    public let offset: Float
    /// The 8-bit code book (bitsandbytes' signed dynamic map unless a checkpoint stores another).
    public let map: [Float]

    public init(codes: [UInt8], nestedAbsmax: [Float], offset: Float, map: [Float]) {
        self.codes = codes
        self.nestedAbsmax = nestedAbsmax
        self.offset = offset
        self.map = map
    }

    /// Quantizes the absmaxes as bitsandbytes' compress_statistics does.
    public init(_ absmax: [Float]) {
        let mean = TorchSum.sum(absmax) / Float(max(absmax.count, 1))
        let centered = absmax.map { $0 - mean }
        let (codes, nested) = Blockwise8Bit.quantize(centered, blockSize: Self.nestedBlockSize, map: DynamicMap.signed)
        self.init(codes: codes, nestedAbsmax: nested, offset: mean, map: DynamicMap.signed)
    }

    /// Block b's absmax: map[code] × its nested block's absmax, plus the offset (fp32, in that order).
    @inline(__always) public func value(_ b: Int) -> Float {
        map[Int(codes[b])] * nestedAbsmax[b / Self.nestedBlockSize] + offset
    }
}

/// bitsandbytes' 8-bit blockwise quantization as its CPU kernel (0.50) computes it: each block is divided by
/// its absmax, the quotient v ∈ [−1, 1] is snapped to the nearest of the 65536 evenly spaced points
/// g_k = −1 + 2k/65535 (k = (v + 1)·32767.5 in fp32, a half rounded up), and g_k's nearest map entry is the
/// code. This lookup is not always the entry nearest to v itself (about 1 value in 600 differs); it reproduces
/// bitsandbytes' codes exactly (docs/CONVENTIONS.md §14).
public enum Blockwise8Bit {
    public static func quantize(_ x: [Float], blockSize: Int, map: [Float]) -> (codes: [UInt8], absmax: [Float]) {
        let table = map == DynamicMap.signed ? signedTable : lookupTable(map)
        let blocks = (x.count + blockSize - 1) / blockSize
        var codes = [UInt8](repeating: 0, count: x.count)
        var absmax = [Float](repeating: 0, count: blocks)
        for b in 0..<blocks {
            let lo = b * blockSize, hi = min(x.count, lo + blockSize)
            var am = -Float.greatestFiniteMagnitude
            for i in lo..<hi { am = max(am, abs(x[i])) }
            absmax[b] = am
            for i in lo..<hi {
                let k = (x[i] / am + 1) * 32767.5   // in fp32, as bitsandbytes; NaN for an all-zero block: code 0
                codes[i] = k.isNaN ? 0 : table[min(65535, max(0, Int(k.rounded(.toNearestOrAwayFromZero))))]
            }
        }
        return (codes, absmax)
    }

    static let signedTable = lookupTable(DynamicMap.signed)

    /// For each grid point g_k, the index of the nearest entry of the sorted `map`.
    static func lookupTable(_ map: [Float]) -> [UInt8] {
        var table = [UInt8](repeating: 0, count: 65536)
        var j = 0
        for k in 0..<65536 {
            let g = -1 + 2 * Double(k) / 65535
            while j + 1 < map.count, abs(Double(map[j + 1]) - g) <= abs(Double(map[j]) - g) { j += 1 }
            table[k] = UInt8(j)
        }
        return table
    }
}

/// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map with 7 exponent bits): for exponent
/// i = 0…6, the midpoints of 2^i + 1 evenly spaced fractions in [0.1, 1], times 10^(i−6), with both
/// signs; then 0 and 1; sorted. Computed in fp32 as torch computes it.
public enum DynamicMap {
    public static let signed: [Float] = {
        var values: [Float] = []
        for i in 0..<7 {
            let steps = (1 << i) + 1
            let fractions = linspace(0.1, 1, steps)
            let scale = Float(pow(10.0, Double(i - 6)))
            for j in 0..<(steps - 1) {
                let mean = (fractions[j] + fractions[j + 1]) / 2
                values.append(scale * mean)
                values.append(-scale * mean)
            }
        }
        values += [0, 1]
        return values.sorted()
    }()

    /// torch.linspace in fp32 (its vectorized CPU kernel): start + step·i for the first half and
    /// end − step·(steps − 1 − i) after, each a fused multiply-add.
    static func linspace(_ start: Float, _ end: Float, _ steps: Int) -> [Float] {
        let step = (end - start) / Float(steps - 1)
        return (0..<steps).map { i in
            i < steps / 2 ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - 1 - i))
        }
    }
}

/// torch.sum of a contiguous fp32 vector in its order of additions (ATen's cascade sum, as torch 2.x runs it on
/// this x86 CPU), so that the double-quantization offset, a mean, is bit for bit bitsandbytes'
/// (docs/CONVENTIONS.md §14): the vector is read as 8-lane vectors; four interleaved accumulators of vectors each
/// sum their rows in levels of 2^p (p = max(4, ⌈log2 rows⌉/4)), carrying each finished level into the next; the
/// leftover vectors go into the first accumulator, the accumulators are added in order, then the tail elements and
/// the 8 lanes into a scalar starting at 0. Vectors shorter than 8 take the same scheme on scalars. (Checked against
/// torch.sum at 512, 3000, 13824 and 100000 elements; 16 lanes disagree from 13824 on.)
public enum TorchSum {
    static let lanes = 8, interleave = 4, levels = 4

    public static func sum(_ x: [Float]) -> Float {
        guard x.count >= lanes else { return rowSum(x.count, width: 1) { i, _ in x[i] }[0] }
        let vectors = x.count / lanes
        var total: Float = 0
        for k in (vectors * lanes)..<x.count { total += x[k] }
        let partial = rowSum(vectors, width: lanes) { v, lane in x[v * lanes + lane] }
        for lane in 0..<lanes { total += partial[lane] }
        return total
    }

    /// ATen's row_sum over `count` items of `width` lanes: interleaved multi-level accumulators.
    static func rowSum(_ count: Int, width: Int, _ item: (Int, Int) -> Float) -> [Float] {
        let rows = count / interleave
        var acc = [[[Float]]](repeating: [[Float]](repeating: [Float](repeating: 0, count: width), count: interleave),
                              count: levels)   // [level][accumulator][lane]
        let power = max(4, ceilLog2(rows) / levels), step = 1 << power, mask = step - 1
        func add(_ row: Int) {
            for a in 0..<interleave { for l in 0..<width { acc[0][a][l] += item(row * interleave + a, l) } }
        }
        var i = 0
        while i + step <= rows {
            for _ in 0..<step { add(i); i += 1 }
            for j in 1..<levels {
                for a in 0..<interleave {
                    for l in 0..<width { acc[j][a][l] += acc[j - 1][a][l]; acc[j - 1][a][l] = 0 }
                }
                if i & (mask << (j * power)) != 0 { break }
            }
        }
        while i < rows { add(i); i += 1 }
        for j in 1..<levels { for a in 0..<interleave { for l in 0..<width { acc[0][a][l] += acc[j][a][l] } } }
        var result = acc[0][0]
        for extra in (rows * interleave)..<count { for l in 0..<width { result[l] += item(extra, l) } }
        for a in 1..<interleave { for l in 0..<width { result[l] += acc[0][a][l] } }
        return result
    }

    static func ceilLog2(_ n: Int) -> Int { n <= 1 ? 0 : Int.bitWidth - (n - 1).leadingZeroBitCount }
}
