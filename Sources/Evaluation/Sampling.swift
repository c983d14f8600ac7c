import Engine
import Foundation

/// How the next token is chosen from the logits, as transformers' generate does it: temperature,
/// then top-k, then top-p (nucleus), then a draw; temperature 0 is greedy (docs/CONVENTIONS.md §11).
public struct SamplingSettings: Equatable, Sendable {
    public var temperature: Double      // 0: greedy (the most likely token)
    public var topK: Int?               // keep the k most likely tokens (ties at the k-th kept)
    public var topP: Double?            // keep the most likely tokens until their mass reaches p
    public var seed: UInt64

    public init(temperature: Double = 0, topK: Int? = nil, topP: Double? = nil, seed: UInt64 = 0) throws {
        guard temperature.isFinite, temperature >= 0 else {
            throw LongTuneError("--temperature must be 0 (greedy) or positive, got \(temperature)")
        }
        if let topK, topK < 1 { throw LongTuneError("--top-k must be at least 1, got \(topK)") }
        if let topP, !(topP > 0 && topP <= 1) { throw LongTuneError("--top-p must be in (0, 1], got \(topP)") }
        self.temperature = temperature; self.topK = topK; self.topP = topP; self.seed = seed
    }

    public static let greedy = try! SamplingSettings()
}

public struct Sampler {
    public let settings: SamplingSettings
    var rng: SplitMix64

    public init(_ settings: SamplingSettings) {
        self.settings = settings
        rng = SplitMix64(seed: settings.seed)
    }

    /// The next token.
    public mutating func next(_ logits: [Float]) -> Int32 {
        if settings.temperature == 0 { return Self.argmax(logits) }
        let candidates = Self.distribution(logits, settings)
        guard let last = candidates.last else { return Self.argmax(logits) }   // no finite logit
        let u = Double(rng.next() >> 11) * 0x1p-53                 // uniform in [0, 1)
        var mass = 0.0
        for (token, p) in candidates {
            mass += p
            if u < mass { return token }
        }
        return last.token
    }

    /// The first most likely token.
    public static func argmax(_ logits: [Float]) -> Int32 {
        var best = 0
        for j in logits.indices where logits[j] > logits[best] { best = j }
        return Int32(best)
    }

    /// The tokens left after temperature, top-k and top-p, most likely first, with their
    /// renormalized probabilities (none when no logit is finite).
    public static func distribution(_ logits: [Float], _ s: SamplingSettings) -> [(token: Int32, p: Double)] {
        let t = max(s.temperature, 1e-12)
        var ranked = logits.enumerated().map { (token: Int32($0.offset), z: Double($0.element) / t) }
            .filter { $0.z.isFinite }
            .sorted { $0.z != $1.z ? $0.z > $1.z : $0.token < $1.token }
        if let k = s.topK, k < ranked.count {
            let kth = ranked[k - 1].z
            ranked = ranked.filter { $0.z >= kth }                  // ties with the k-th stay, as in transformers
        }
        guard let top = ranked.first?.z else { return [] }
        var weights = ranked.map { Foundation.exp($0.z - top) }
        if let p = s.topP, p < 1 {
            // transformers: drop a token when it and every less likely token together hold at most 1 − p.
            let total = weights.reduce(0, +)
            var tail = 0.0, keep = weights.count
            for j in stride(from: weights.count - 1, to: 0, by: -1) {
                tail += weights[j] / total
                if tail <= 1 - p { keep = j } else { break }
            }
            weights = Array(weights.prefix(keep)); ranked = Array(ranked.prefix(keep))
        }
        let z = weights.reduce(0, +)
        return zip(ranked, weights).map { ($0.token, $1 / z) }
    }
}
