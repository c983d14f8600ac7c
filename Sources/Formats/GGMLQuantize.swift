import Engine
import Foundation

/// The ggml tensor types LongTune writes into GGUF files, and their quantizers: each one reproduces llama.cpp's
/// reference quantizer (`ggml-quants.c`, the path `llama-quantize` takes without an importance matrix) operation
/// for operation in fp32, so an export is byte-identical to what llama.cpp writes (docs/CONVENTIONS.md §20).
public enum GGMLType: UInt32, CaseIterable, Sendable {
    case f32 = 0, f16 = 1, q4_0 = 2, q5_0 = 6, q5_1 = 7, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// ggml's name (F32, Q4_K, …), as llama.cpp prints it.
    public var name: String { GGUFFile.layouts[rawValue]!.name }
    /// Elements per block (1 for F32/F16/BF16, 32, or 256 for the K-quants).
    public var blockSize: Int { GGUFFile.layouts[rawValue]!.block }
    public var blockBytes: Int { GGUFFile.layouts[rawValue]!.bytes }

    /// Bytes of one row of `columns` elements; `columns` must be a multiple of `blockSize`.
    public func rowBytes(_ columns: Int) -> Int { columns / blockSize * blockBytes }

    /// Writes `count` elements (a multiple of `blockSize`) of `x` into `y` in this type.
    public func quantize(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutableRawPointer) {
        precondition(count % blockSize == 0, "\(name): \(count) elements is not a whole number of blocks")
        let blocks = count / blockSize
        for b in 0..<blocks {
            let src = x + b * blockSize, dst = y + b * blockBytes
            switch self {
            case .f32: dst.storeBytes(of: src[0].bitPattern.littleEndian, as: UInt32.self)
            case .f16: dst.storeBytes(of: fp16Bits(src[0]).littleEndian, as: UInt16.self)
            case .bf16: dst.storeBytes(of: bf16Bits(src[0]).littleEndian, as: UInt16.self)
            case .q8_0: GGMLQuant.q8_0(src, dst)
            case .q4_0: GGMLQuant.q4_0(src, dst)
            case .q5_0: GGMLQuant.q5_0(src, dst)
            case .q5_1: GGMLQuant.q5_1(src, dst)
            case .q4_K: GGMLQuant.q45K(src, dst, fifthBit: false)
            case .q5_K: GGMLQuant.q45K(src, dst, fifthBit: true)
            case .q6_K: GGMLQuant.q6K(src, dst)
            }
        }
    }
}

/// One block of each quantized type (layouts in docs/CONVENTIONS.md §9). Every product, sum and comparison is
/// in the order of llama.cpp's reference code, without fused multiply-adds, so the bytes agree exactly.
enum GGMLQuant {
    /// llama.cpp's `nearest_int`: round half to even through the float adder (valid for |v| < 2²²).
    @inline(__always) static func nearestInt(_ v: Float) -> Int {
        let bits = Int32(bitPattern: (v + 12_582_912).bitPattern)
        return Int((bits & 0x007F_FFFF) - 0x0040_0000)
    }

    @inline(__always) static func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, at offset: Int) {
        p.storeBytes(of: fp16Bits(v).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    /// The element of largest magnitude (the first such), as a signed value.
    @inline(__always) static func signedAbsMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var amax: Float = 0, max: Float = 0
        for j in 0..<n where amax < abs(x[j]) { amax = abs(x[j]); max = x[j] }
        return max
    }

    /// Q8_0: d = amax/127 (fp16), 32 × int8 round(x/d) (half away from zero).
    static func q8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = Swift.max(amax, abs(x[j])) }
        let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, at: 0)
        for j in 0..<32 {
            y.storeBytes(of: Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)), toByteOffset: 2 + j, as: Int8.self)
        }
    }

    /// Q4_0: d = max/−8 (the signed largest-magnitude element), 4-bit q = min(15, trunc(x/d + 8.5));
    /// element j and j + 16 share a byte (low, high nibble).
    static func q4_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x, 32) / -8, id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, at: 0)
        for j in 0..<16 {
            let lo = Swift.min(15, truncatedInt8(x[j] * id + 8.5))
            let hi = Swift.min(15, truncatedInt8(x[j + 16] * id + 8.5))
            y.storeBytes(of: UInt8(lo) | UInt8(hi) << 4, toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// Q5_0: d = max/−16, 5-bit q = min(31, trunc(x/d + 16.5)); low nibbles as Q4_0, fifth bits in a u32.
    static func q5_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        let d = signedAbsMax(x, 32) / -16, id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, at: 0)
        var q = [UInt8](repeating: 0, count: 32)
        for j in 0..<32 { q[j] = UInt8(Swift.min(31, truncatedInt8(x[j] * id + 16.5))) }
        storeFiveBit(q, y, at: 2)
    }

    /// Q5_1: d = (max − min)/31, m = min, q = trunc((x − min)/d + 0.5).
    static func q5_1(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 { if x[j] < lo { lo = x[j] }; if x[j] > hi { hi = x[j] } }
        let d = (hi - lo) / 31, id: Float = d != 0 ? 1 / d : 0
        storeHalf(d, y, at: 0)
        storeHalf(lo, y, at: 2)
        var q = [UInt8](repeating: 0, count: 32)
        for j in 0..<32 { q[j] = UInt8(truncatingIfNeeded: Int((x[j] - lo) * id + 0.5)) }
        storeFiveBit(q, y, at: 4)
    }

    /// C's `(int8_t)v` for the values these quantizers produce (0 … 32.5): truncation toward zero.
    @inline(__always) static func truncatedInt8(_ v: Float) -> Int { Int(Int8(truncatingIfNeeded: Int(v))) }

    /// Q5_0/Q5_1's payload at `offset`: a u32 of fifth bits (bit j for element j), then 16 bytes of low nibbles.
    static func storeFiveBit(_ q: [UInt8], _ y: UnsafeMutableRawPointer, at offset: Int) {
        var qh: UInt32 = 0
        for j in 0..<16 {
            y.storeBytes(of: (q[j] & 0x0F) | (q[j + 16] & 0x0F) << 4, toByteOffset: offset + 4 + j, as: UInt8.self)
            qh |= UInt32((q[j] & 0x10) >> 4) << UInt32(j)
            qh |= UInt32((q[j + 16] & 0x10) >> 4) << UInt32(j + 16)
        }
        y.storeBytes(of: qh.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}

// K-quants: super-blocks of 256 elements (docs/CONVENTIONS.md §9, §20).
extension GGMLQuant {
    /// Scale and offset of one sub-block of `n` elements on levels 0…nmax, as llama.cpp's `make_qkx2_quants`
    /// chooses them (weighted least squares over `nstep + 1` trial scales): returns (scale, −min) and fills `levels`.
    static func scaleAndMin(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, weights w: [Float],
                            levels: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float,
                            nstep: Int) -> (scale: Float, min: Float) {
        var lo = x[0], hi = x[0], sumW = w[0], sumX = w[0] * x[0]
        for i in 1..<n {
            if x[i] < lo { lo = x[i] }
            if x[i] > hi { hi = x[i] }
            sumW += w[i]
            sumX += w[i] * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { levels[i] = 0 }
            return (0, -lo)
        }
        let fmax = Float(nmax)
        var iscale = fmax / (hi - lo), scale = 1 / iscale, bestError: Float = 0
        for i in 0..<n {
            levels[i] = UInt8(Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - lo)))))
            let diff = scale * Float(levels[i]) + lo - x[i]
            bestError += w[i] * (diff * diff)
        }
        var trial = [UInt8](repeating: 0, count: n)
        for step in 0...nstep {
            iscale = (rmin + rdelta * Float(step) + fmax) / (hi - lo)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - lo))))
                trial[i] = UInt8(l)
                let fl = Float(l)
                sumL += w[i] * fl
                sumL2 += w[i] * fl * fl
                sumXL += w[i] * fl * x[i]
            }
            let det = sumW * sumL2 - sumL * sumL
            guard det > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / det, thisMin = (sumL2 * sumX - sumL * sumXL) / det
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(trial[i]) + thisMin - x[i]
                error += w[i] * (diff * diff)
            }
            if error < bestError {
                for i in 0..<n { levels[i] = trial[i] }
                bestError = error
                scale = thisScale
                lo = thisMin
            }
        }
        return (scale, -lo)
    }

    /// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins (scale d·sc, offset −dmin·m), levels 0…15
    /// or 0…31. Byte layout: d, dmin, 12 bytes of scales/mins, (Q5_K: 32 bytes of fifth bits), 128 of nibbles.
    static func q45K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, fifthBit: Bool) {
        let nmax = fifthBit ? 31 : 15
        var levels = [UInt8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        var maxScale: Float = 0, maxMin: Float = 0
        var weights = [Float](repeating: 0, count: 32)
        for j in 0..<8 {
            let xs = x + 32 * j
            var sumX2: Float = 0
            for l in 0..<32 { sumX2 += xs[l] * xs[l] }
            let avX = (sumX2 / 32).squareRoot()
            for l in 0..<32 { weights[l] = avX + abs(xs[l]) }
            (scales[j], mins[j]) = levels.withUnsafeMutableBufferPointer {
                scaleAndMin(xs, 32, nmax: nmax, weights: weights, levels: $0.baseAddress! + 32 * j,
                            rmin: fifthBit ? -0.5 : -1, rdelta: 0.1, nstep: fifthBit ? 15 : 20)
            }
            if scales[j] > maxScale { maxScale = scales[j] }
            if mins[j] > maxMin { maxMin = mins[j] }
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0, invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            let ls = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
            let lm = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
            if j < 4 {
                packed[j] = ls
                packed[j + 4] = lm
            } else {
                packed[j + 4] = (ls & 0x0F) | (lm & 0x0F) << 4
                packed[j - 4] |= (ls >> 4) << 6
                packed[j] |= (lm >> 4) << 6
            }
        }
        let dBits = fp16Bits(maxScale / 63), dminBits = fp16Bits(maxMin / 63)
        for j in 0..<8 {
            let (sc, m) = j < 4 ? (packed[j] & 63, packed[j + 4] & 63)
                : ((packed[j + 4] & 0x0F) | (packed[j - 4] >> 6) << 4, (packed[j + 4] >> 4) | (packed[j] >> 6) << 4)
            let d = floatFromFP16(dBits) * Float(sc)
            if d == 0 { continue }
            let dm = floatFromFP16(dminBits) * Float(m)
            for i in 0..<32 {
                levels[32 * j + i] = UInt8(Swift.max(0, Swift.min(nmax, nearestInt((x[32 * j + i] + dm) / d))))
            }
        }
        y.storeBytes(of: dBits.littleEndian, toByteOffset: 0, as: UInt16.self)
        y.storeBytes(of: dminBits.littleEndian, toByteOffset: 2, as: UInt16.self)
        for (i, b) in packed.enumerated() { y.storeBytes(of: b, toByteOffset: 4 + i, as: UInt8.self) }
        let nibbles = fifthBit ? 48 : 16
        if fifthBit { for i in 0..<32 { y.storeBytes(of: UInt8(0), toByteOffset: 16 + i, as: UInt8.self) } }
        for chunk in 0..<4 {   // elements 64·chunk + l (low nibble) and 64·chunk + 32 + l (high nibble)
            for l in 0..<32 {
                var (a, b) = (levels[64 * chunk + l], levels[64 * chunk + 32 + l])
                if fifthBit {
                    var high = y.load(fromByteOffset: 16 + l, as: UInt8.self)
                    if a > 15 { a -= 16; high |= 1 << (2 * chunk) }
                    if b > 15 { b -= 16; high |= 2 << (2 * chunk) }
                    y.storeBytes(of: high, toByteOffset: 16 + l, as: UInt8.self)
                }
                y.storeBytes(of: a | b << 4, toByteOffset: nibbles + 32 * chunk + l, as: UInt8.self)
            }
        }
    }

    /// The signed scale of one sub-block of `n` on levels −nmax…nmax−1 with weights x², as llama.cpp's
    /// `make_qx_quants` (rmse_type 1) chooses it over 19 trial scales; fills `levels` with level + nmax.
    static func signedScale(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int,
                            levels: UnsafeMutablePointer<Int8>) -> Float {
        let max = signedAbsMax(x, n)
        if abs(max) < 1e-15 {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        func level(_ v: Float) -> Int { Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(v))) }
        var iscale = -fmax / max, sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = level(iscale * x[i])
            levels[i] = Int8(l + nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0, best = scale * sumLX
        for trial in -9...9 where trial != 0 {
            iscale = -(fmax + 0.1 * Float(trial)) / max
            sumLX = 0; sumL2 = 0
            for i in 0..<n {
                let w = x[i] * x[i], fl = Float(level(iscale * x[i]))
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { levels[i] = Int8(nmax + level(iscale * x[i])) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    /// Q6_K: 16 sub-blocks of 16 with int8 scales (d·sc), levels −32…31. Byte layout: 128 bytes of low nibbles,
    /// 64 of high bit pairs, 16 scales, d.
    static func q6K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var levels = [Int8](repeating: 0, count: 256), scales = [Float](repeating: 0, count: 16)
        var maxScale: Float = 0, maxAbsScale: Float = 0
        levels.withUnsafeMutableBufferPointer { l in
            for ib in 0..<16 {
                scales[ib] = signedScale(x + 16 * ib, 16, nmax: 32, levels: l.baseAddress! + 16 * ib)
                if abs(scales[ib]) > maxAbsScale { maxAbsScale = abs(scales[ib]); maxScale = scales[ib] }
            }
        }
        y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
        if maxAbsScale < 1e-15 { return }
        let iscale = -128 / maxScale, dBits = fp16Bits(1 / iscale)
        y.storeBytes(of: dBits.littleEndian, toByteOffset: 208, as: UInt16.self)
        for ib in 0..<16 {
            let sc = Int8(truncatingIfNeeded: Swift.min(127, nearestInt(iscale * scales[ib])))
            y.storeBytes(of: sc, toByteOffset: 192 + ib, as: Int8.self)
            let d = floatFromFP16(dBits) * Float(sc)
            if d == 0 { continue }
            for i in 0..<16 {
                levels[16 * ib + i] = Int8(Swift.max(-32, Swift.min(31, nearestInt(x[16 * ib + i] / d))) + 32)
            }
        }
        for half in 0..<2 {   // elements 128·half + l + 32·k, k = 0…3
            for l in 0..<32 {
                let q = (0..<4).map { UInt8(levels[128 * half + l + 32 * $0]) }
                y.storeBytes(of: (q[0] & 0x0F) | (q[2] & 0x0F) << 4, toByteOffset: 64 * half + l, as: UInt8.self)
                y.storeBytes(of: (q[1] & 0x0F) | (q[3] & 0x0F) << 4, toByteOffset: 64 * half + 32 + l, as: UInt8.self)
                y.storeBytes(of: q[0] >> 4 | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6,
                             toByteOffset: 128 + 32 * half + l, as: UInt8.self)
            }
        }
    }
}
