import Engine
import Foundation
import Settings

/// A RoPE scaling kind with its parameters (docs/CONVENTIONS.md §2), as transformers' `rope_parameters` /
/// `rope_scaling` carry it, plus exllama's static NTK `alpha_value` ("ntk_alpha").
public struct RopeScaling: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case `default`, linear, ntkAlpha = "ntk_alpha", dynamic, yarn, llama3, longrope

        /// Kinds whose frequencies depend on the length of the forward pass (dynamic NTK's base, longrope's
        /// short/long switch at the original window; docs/CONVENTIONS.md §2).
        public var dependsOnSequenceLength: Bool { self == .dynamic || self == .longrope }
    }
    public var kind: Kind
    public var factor: Double?
    public var alpha: Double?                       // ntk_alpha
    public var originalMaxPositionEmbeddings: Int?
    // yarn
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool?
    // llama3
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    // longrope
    public var shortFactor: [Double]?
    public var longFactor: [Double]?

    public init(kind: Kind, factor: Double? = nil, alpha: Double? = nil, originalMaxPositionEmbeddings: Int? = nil) {
        self.kind = kind; self.factor = factor; self.alpha = alpha
        self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }

    enum CodingKeys: String, CodingKey {
        case kind = "rope_type", type, factor, alpha = "alpha_value"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case attentionFactor = "attention_factor", betaFast = "beta_fast", betaSlow = "beta_slow"
        case mscale, mscaleAllDim = "mscale_all_dim", truncate
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case shortFactor = "short_factor", longFactor = "long_factor", ropeTheta = "rope_theta"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decodeIfPresent(String.self, forKey: .kind)
            ?? c.decodeIfPresent(String.self, forKey: .type) ?? "default"
        guard let k = Kind(rawValue: name == "su" ? "longrope" : name) else {
            let supported = Kind.allCases.map(\.rawValue).joined(separator: ", ")
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription:
                "unsupported rope_type \"\(name)\"; supported: \(supported)")
        }
        kind = k
        factor = try c.decodeIfPresent(Double.self, forKey: .factor)
        alpha = try c.decodeIfPresent(Double.self, forKey: .alpha)
        originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
        attentionFactor = try c.decodeIfPresent(Double.self, forKey: .attentionFactor)
        betaFast = try c.decodeIfPresent(Double.self, forKey: .betaFast)
        betaSlow = try c.decodeIfPresent(Double.self, forKey: .betaSlow)
        mscale = try c.decodeIfPresent(Double.self, forKey: .mscale)
        mscaleAllDim = try c.decodeIfPresent(Double.self, forKey: .mscaleAllDim)
        truncate = try c.decodeIfPresent(Bool.self, forKey: .truncate)
        lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
        highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
        shortFactor = try c.decodeIfPresent([Double].self, forKey: .shortFactor)
        longFactor = try c.decodeIfPresent([Double].self, forKey: .longFactor)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try encodeFields(into: &c)
    }

    /// Writes the fields into an existing container (config.json's `rope_parameters` adds rope_theta).
    func encodeFields(into c: inout KeyedEncodingContainer<CodingKeys>) throws {
        try c.encode(kind.rawValue, forKey: .kind)
        try c.encode(kind.rawValue, forKey: .type)
        try c.encodeIfPresent(factor, forKey: .factor)
        try c.encodeIfPresent(alpha, forKey: .alpha)
        try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
        try c.encodeIfPresent(attentionFactor, forKey: .attentionFactor)
        try c.encodeIfPresent(betaFast, forKey: .betaFast)
        try c.encodeIfPresent(betaSlow, forKey: .betaSlow)
        try c.encodeIfPresent(mscale, forKey: .mscale)
        try c.encodeIfPresent(mscaleAllDim, forKey: .mscaleAllDim)
        try c.encodeIfPresent(truncate, forKey: .truncate)
        try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
        try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
        try c.encodeIfPresent(shortFactor, forKey: .shortFactor)
        try c.encodeIfPresent(longFactor, forKey: .longFactor)
    }

    /// Checks the keys each kind needs; `where` names the source for the message.
    public func validate(rotaryDim: Int, where source: String) throws {
        func need<T>(_ v: T?, _ key: String) throws -> T {
            guard let v else { throw LongTuneError("\(source): rope_type \"\(kind.rawValue)\" needs \"\(key)\"") }
            return v
        }
        switch kind {
        case .default: break
        case .linear, .dynamic: _ = try need(factor, "factor")
        case .ntkAlpha: _ = try need(alpha, "alpha_value")
        case .yarn: _ = try need(factor, "factor")
        case .llama3:
            _ = try need(factor, "factor"); _ = try need(lowFreqFactor, "low_freq_factor")
            _ = try need(highFreqFactor, "high_freq_factor")
            _ = try need(originalMaxPositionEmbeddings, "original_max_position_embeddings")
        case .longrope:
            let s = try need(shortFactor, "short_factor"), l = try need(longFactor, "long_factor")
            guard s.count == rotaryDim / 2, l.count == rotaryDim / 2 else {
                throw LongTuneError("\(source): longrope short_factor/long_factor need \(rotaryDim / 2) values each, "
                                    + "got \(s.count)/\(l.count)")
            }
        }
        let positives: [(String, Double?)] = [("factor", factor), ("alpha_value", alpha), ("beta_fast", betaFast),
                                              ("beta_slow", betaSlow), ("low_freq_factor", lowFreqFactor),
                                              ("high_freq_factor", highFreqFactor),
                                              ("attention_factor", attentionFactor)]
        for case let (key, v?) in positives where !(v > 0 && v.isFinite) {
            throw LongTuneError("\(source): \(key) must be a positive number, got \(v)")
        }
        for case let (key, v?) in [("mscale", mscale), ("mscale_all_dim", mscaleAllDim)] where !v.isFinite {
            throw LongTuneError("\(source): \(key) must be a finite number, got \(v)")
        }
        if let l0 = originalMaxPositionEmbeddings, l0 <= 0 {
            throw LongTuneError("\(source): original_max_position_embeddings must be positive, got \(l0)")
        }
        if kind == .llama3, let lf = lowFreqFactor, let hf = highFreqFactor, hf <= lf {
            throw LongTuneError("\(source): high_freq_factor \(hf) must exceed low_freq_factor \(lf)")
        }
        for (key, list) in [("short_factor", shortFactor), ("long_factor", longFactor)] {
            if let bad = list?.first(where: { !($0 > 0 && $0.isFinite) }) {
                throw LongTuneError("\(source): \(key) values must be positive numbers, got \(bad)")
            }
        }
    }
}

/// Inverse frequencies and attention factor of a RoPE kind for a sequence (docs/CONVENTIONS.md §2), computed in
/// float32 steps as transformers does, so positions far past the window agree to the last bits.
public struct RopeFrequencies {
    public let invFreq: [Double]
    public let attentionFactor: Double

    /// - Parameters:
    ///   - maxPositionEmbeddings: the config's `max_position_embeddings` (dynamic's and yarn's fallback L0).
    ///   - sequenceLength: max position + 1 of the current sequence (dynamic and longrope depend on it).
    public init(scaling: RopeScaling?, theta: Double, rotaryDim dim: Int, maxPositionEmbeddings: Int,
                sequenceLength: Int) {
        let s = scaling ?? RopeScaling(kind: .default)
        let l0 = s.originalMaxPositionEmbeddings ?? maxPositionEmbeddings
        /// 1 / base^(2i/d) with float32 rounding at each step.
        func standard(_ base: Double) -> [Double] {
            (0..<(dim / 2)).map { i in
                let e = Float(2 * i) / Float(dim)
                let p = Float(Foundation.pow(Double(Float(base)), Double(e)))
                return Double(1 / p)
            }
        }
        switch s.kind {
        case .default:
            invFreq = standard(theta); attentionFactor = 1
        case .linear:
            let f = Float(s.factor!)
            invFreq = standard(theta).map { Double(Float($0) / f) }; attentionFactor = 1
        case .ntkAlpha:
            invFreq = standard(RopeScaling.ntkAlphaBase(theta: theta, alpha: s.alpha!, rotaryDim: dim))
            attentionFactor = 1
        case .dynamic:
            // transformers uses max_position_embeddings as L0 here and grows only past it.
            let f = s.factor!, l = Double(max(sequenceLength, maxPositionEmbeddings))
            let base = theta * Foundation.pow(f * l / Double(maxPositionEmbeddings) - (f - 1),
                                              Double(dim) / Double(dim - 2))
            invFreq = standard(base); attentionFactor = 1
        case .yarn:
            let f = s.factor ?? Double(maxPositionEmbeddings) / Double(l0)
            func g(_ x: Double, _ m: Double = 1) -> Double { x <= 1 ? 1 : 0.1 * m * Foundation.log(x) + 1 }
            if let a = s.attentionFactor { attentionFactor = a }
            else if let m = s.mscale, let ma = s.mscaleAllDim, m != 0, ma != 0 { attentionFactor = g(f, m) / g(f, ma) }
            else { attentionFactor = g(f) }
            let bf = s.betaFast ?? 32, bs = s.betaSlow ?? 1
            func corr(_ n: Double) -> Double {
                Double(dim) * Foundation.log(Double(l0) / (n * 2 * .pi)) / (2 * Foundation.log(theta))
            }
            var low = corr(bf), high = corr(bs)
            if s.truncate ?? true { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0); high = min(high, Double(dim - 1))
            if low == high { high += 0.001 }
            let posFreqs: [Float] = (0..<(dim / 2)).map { i in
                Float(Foundation.pow(Double(Float(theta)), Double(Float(2 * i) / Float(dim))))
            }
            invFreq = posFreqs.enumerated().map { i, p in
                let ramp = min(max((Float(i) - Float(low)) / (Float(high) - Float(low)), 0), 1)
                let extrapolation = 1 - ramp
                let inter = 1 / (Float(f) * p), extra = 1 / p
                return Double(inter * (1 - extrapolation) + extra * extrapolation)
            }
        case .llama3:
            let f = s.factor!, lf = s.lowFreqFactor!, hf = s.highFreqFactor!
            let old = Double(s.originalMaxPositionEmbeddings!)
            invFreq = standard(theta).map { q in
                let wavelen = 2 * Double.pi / q
                let scaled = wavelen > old / lf ? Double(Float(q) / Float(f)) : q
                if wavelen < old / hf || wavelen > old / lf { return scaled }
                let smooth = (old / wavelen - lf) / (hf - lf)
                return Double(Float((1 - smooth) * scaled / f + smooth * scaled))
            }
            attentionFactor = 1
        case .longrope:
            let f = s.factor ?? Double(maxPositionEmbeddings) / Double(l0)
            if let a = s.attentionFactor { attentionFactor = a }
            else { attentionFactor = f <= 1 ? 1 : (1 + Foundation.log(f) / Foundation.log(Double(l0))).squareRoot() }
            let ext = sequenceLength > l0 ? s.longFactor! : s.shortFactor!
            invFreq = (0..<(dim / 2)).map { i in
                let p = Float(Foundation.pow(Double(Float(theta)), Double(Float(2 * i) / Float(dim))))
                return Double(1 / (Float(ext[i]) * p))
            }
        }
    }
}

extension RopeScaling {
    /// exllama's static NTK-aware base b·α^(d/(d−2)) (docs/CONVENTIONS.md §2): `ntk_alpha` is default
    /// RoPE with this base.
    public static func ntkAlphaBase(theta: Double, alpha: Double, rotaryDim d: Int) -> Double {
        theta * Foundation.pow(alpha, Double(d) / Double(d - 2))
    }
}

extension RopeScaling: KnobValueDescribed {
    public static var knobTypeDescription: String {
        "mapping: rope_type (" + Kind.allCases.map(\.rawValue).joined(separator: " | ")
            + "), factor, original_max_position_embeddings, …"
    }
}

extension RopeScaling {
    /// A scaling as commands and errors show it: its JSON, or "none".
    public static func text(_ scaling: RopeScaling?) -> String {
        guard let scaling else { return "none" }
        return (try? JSONEncoder().encode(scaling)).map { String(decoding: $0, as: UTF8.self) } ?? "\(scaling)"
    }
}
