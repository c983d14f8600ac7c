import Adapters
import Engine
import Formats
import Foundation
import Llama

/// A training run's predicted memory and time, before anything heavy is loaded (docs/CONVENTIONS.md §13).
///
/// The exact parts (frozen weights, trainable tensors, their gradients and AdamW moments) come from the
/// shapes. Everything else a step allocates (saved activations, checkpointed layer inputs, attention and
/// loss scratch) is measured, not modelled: the trainer's own step runs on models of 1 and 2 layers at two
/// short lengths, the engine's tensor counter records each peak, and since every allocation grows at most
/// linearly in the layers L and the tokens T, peak = a + b·L + c·T + d·L·T fits the four probes exactly and
/// extrapolates to the recipe's shape.
public struct RunPlan: Codable, Sendable {
    public struct Part: Codable, Sendable {
        public let name: String
        public let bytes: Int
        public let how: String          // "shapes" (exact), "probed" (fitted), "process"
    }
    public struct Fit: Codable, Sendable {   // bytes = a + b·L + c·T + d·L·T
        public let a, b, c, d: Double
        public func bytes(layers l: Int, tokens t: Int) -> Double {
            a + b * Double(l) + c * Double(t) + d * Double(l) * Double(t)
        }
    }
    public struct Alternative: Codable, Sendable {
        public let change: String       // what differs from the recipe
        public let peakRSSBytes: Int
        public let largestContext: Int  // that fits the memory available
    }

    public let layers: Int
    public let context: Int
    public let sequencesPerStep: Int
    public let parts: [Part]
    public let tensorPeakBytes: Int
    public let peakRSSBytes: Int
    public let availableBytes: Int
    public let availableSource: String
    public let moments: [Fit]           // the non-exact bytes of each moment of a step (Planner.momentCount)
    public let flopsPerToken: Double
    /// The probed rates (docs/CONVENTIONS.md §13): the step's work outside attention, and the fused attention's.
    public let stepGFlops: Double
    public let attentionGFlops: Double
    public let secondsPerStep: Double
    public let secondsTotal: Double
    public let largestContext: Int
    public let alternatives: [Alternative]

    public var fits: Bool { peakRSSBytes <= availableBytes }
}

/// How a base keeps frozen weights outside fp32 tensors (docs/CONVENTIONS.md §13, §14, §15): each such parameter's
/// bytes by HF name, from the shapes (NF4, a 16-bit embedding, bf16 weights for bf16 compute) or a GGUF file's
/// header (its block-quantized projections).
public struct FrozenFootprint {
    public var stored: [String: Int] = [:]
    public var kinds: [String] = []
    /// The names in `stored` that are kept in bf16 for bf16 compute (converted from fp32 by `setComputeDType`).
    public var bf16: Set<String> = []
    public init() {}

    /// The footprint of the base `spec` (with the model shape `config`) under `quantization` and `compute`: with
    /// bf16 compute every frozen weight not stored compressed takes 2 bytes per value (a trained embedding is
    /// counted back in fp32 by `Planner.exactParts`).
    public static func of(_ spec: String, config: LlamaConfig, quantization: Quantization?,
                          compute: ComputeDType = .fp32) throws -> FrozenFootprint {
        var f = FrozenFootprint()
        let model = LlamaForCausalLM(config: config)   // names and shapes only
        func note(_ kind: String) { if !f.kinds.contains(kind) { f.kinds.append(kind) } }
        let gguf = ModelSource.isGGUF(spec) ? try GGUFFile(URL(fileURLWithPath: spec)) : nil
        let ggufNames = gguf.map(GGUFImport.hfNames) ?? [:]
        for lin in model.quantizableLinears {
            let name = lin.path + ".weight", shape = [lin.outFeatures, lin.inFeatures]
            if let gguf, let info = ggufNames[name].flatMap({ gguf.tensors[$0] }), GGUFFile.isBlockQuantized(info.type),
               let bytes = GGUFFile.storedBytes(info), let layout = GGUFFile.layouts[info.type] {
                f.stored[name] = bytes
                note(layout.name)
            } else if let quantization {
                f.stored[name] = quantization.storedBytes(shape: shape)
                note(quantization.kind)
            } else if compute == .bf16 {
                f.stored[name] = 2 * shape.reduce(1, *)
                f.bf16.insert(name)
                note("bf16")
            }
        }
        let e = model.model.embed_tokens
        if try compute == .bf16 || ModelSource.embeddingIn16Bit(spec, config: config, quantization: quantization) {
            f.stored[e.path + ".weight"] = 2 * e.count * e.dimension
            note(compute == .bf16 ? "bf16 embedding" : "16-bit embedding")
        }
        if compute == .bf16 {
            f.bf16.insert(e.path + ".weight")
            if !config.tieWordEmbeddings {
                f.stored[model.lm_head.path + ".weight"] = 2 * e.count * e.dimension
                f.bf16.insert(model.lm_head.path + ".weight")
                note("bf16 LM head")
            }
        }
        return f
    }
}

public enum Planner {
    /// Resident memory besides the engine's tensors once training runs: OpenBLAS's per-thread buffers,
    /// the runtime's heap, small allocations (calibrated: `bench train`'s RSS minus its tensor peak).
    public static let processOverhead = 160 << 20

    /// The plan of `recipe`. `measureSpeed: false` skips the sgemm probe (then no time is predicted);
    /// `alternatives: false` skips probing the recipe with checkpointing turned on.
    public static func plan(_ recipe: Recipe, measureSpeed: Bool = true, alternatives: Bool = true) throws -> RunPlan {
        let config = try modelConfig(recipe)
        let t = recipe.training, c = recipe.model.context_length
        let (fits, probeSeconds) = try probe(recipe, config: config, checkpointing: t.activation_checkpointing)
        let exact = try exactParts(config, recipe.adapter, footprint: try footprint(recipe, config))
        let layers = config.numHiddenLayers
        let (available, source) = Machine.availableMemory()
        let baseline = Machine.residentBytes() + processOverhead
        // Under sequence parallelism a rank holds a share of the rows, and one layer at a time also the halo's
        // (docs/CONVENTIONS.md §17): the layer-independent per-token part (c) of each moment covers those.
        let share = SequenceShareSize(recipe)
        func probed(_ fits: [RunPlan.Fit], tokens: Int) -> Int {
            let rows = share.rows(of: tokens), halo = Double(share.haloRows(of: tokens))
            return Int(fits.map { $0.bytes(layers: layers, tokens: rows) + max(0, $0.c) * halo }.max()!)
        }
        func peak(_ fits: [RunPlan.Fit], tokens: Int) -> Int {
            exact.reduce(0) { $0 + $1.bytes } + probed(fits, tokens: tokens)
        }
        func largest(_ fits: [RunPlan.Fit]) -> Int {   // the longest context every moment fits in
            let raw = fits.map { f -> Double in
                let perToken = (f.c + f.d * Double(layers)) * share.rowFraction + max(0, f.c) * share.haloFraction
                let fixed = Double(exact.reduce(0) { $0 + $1.bytes } + baseline) + f.a + f.b * Double(layers)
                return perToken > 0 ? max(0, (Double(available) - fixed) / perToken) : 1e12
            }.min()!
            return validContext(Int(min(raw, 1e12)), recipe)
        }
        let tensorPeak = peak(fits, tokens: c)
        var changes: [RunPlan.Alternative] = []
        if alternatives && !t.activation_checkpointing {
            let ck = try probe(recipe, config: config, checkpointing: true).fits
            changes.append(.init(change: "training.activation_checkpointing: true",
                                      peakRSSBytes: peak(ck, tokens: c) + baseline, largestContext: largest(ck)))
        }
        let flops = try FlopCount(config: config, lora: recipe.adapter, context: c, attention: recipe.attentionMode,
                                  checkpointing: t.activation_checkpointing)
        let tokens = Double(c * t.batch_size * t.gradient_accumulation)
        let ranks = Double(recipe.attention.sequence_parallel)   // each computes its share of every sequence
        let rates = measureSpeed ? try StepRates(recipe, config: config, probeSeconds: probeSeconds) : nil
        let seconds = rates.map { $0.seconds(flops) * tokens / ranks } ?? 0
        let activations = probed(fits, tokens: c)
        let parts = exact + [
            .init(name: "activations and scratch (\(t.activation_checkpointing ? "checkpointed" : "all layers kept"))",
                  bytes: activations, how: "probed"),
            .init(name: "process (runtime, BLAS buffers)", bytes: baseline, how: "process"),
        ]
        return RunPlan(layers: config.numHiddenLayers, context: c,
                       sequencesPerStep: t.batch_size * t.gradient_accumulation,
                       parts: parts, tensorPeakBytes: tensorPeak, peakRSSBytes: tensorPeak + baseline,
                       availableBytes: available, availableSource: source, moments: fits,
                       flopsPerToken: flops.perToken, stepGFlops: rates?.stepGFlops ?? 0,
                       attentionGFlops: rates?.attentionGFlops ?? 0, secondsPerStep: seconds,
                       secondsTotal: seconds * Double(t.steps), largestContext: largest(fits), alternatives: changes)
    }

    /// Why a plan does not fit, and the cheapest change that would.
    public static func refusal(_ plan: RunPlan, recipe source: String) -> String {
        let gib = { (b: Int) in String(format: "%.1f GiB", Double(b) / 1_073_741_824) }
        var fix = plan.largestContext >= 2
            ? "model.context_length: \(plan.largestContext) (the largest that fits)" : nil
        if let ck = plan.alternatives.first(where: { $0.peakRSSBytes <= plan.availableBytes }) {
            fix = "\(ck.change) (predicted \(gib(ck.peakRSSBytes)))"
        }
        return "\(source): predicted peak memory \(gib(plan.peakRSSBytes)) exceeds the \(gib(plan.availableBytes)) "
            + "available (\(plan.availableSource)); " + (fix.map { "cheapest change that fits: \($0); " } ?? "")
            + "`longtune plan \(source)` shows the parts. Set training.memory_check: false to start anyway"
    }

    /// Forward-only memory (evaluation): weights plus a fit over 1- and 2-layer models at 1024 and 2048
    /// tokens of `tokenLosses`, the evaluation's own forward pass. Returns the peak RSS for each length.
    public static func forwardPeaks(_ config: LlamaConfig, lengths: [Int],
                                    footprint: FrozenFootprint = FrozenFootprint(),
                                    compute: ComputeDType = .fp32) throws -> [Int] {
        var p = [[Double]](repeating: [0, 0], count: 2)
        let (t1, t2) = (1024, 2048)
        for (li, layers) in [1, 2].enumerated() {
            let small = config.withLayers(layers)
            for (ti, length) in [t1, t2].enumerated() {
                let before = MemoryStats.liveBytes
                MemoryStats.resetPeak()
                func run() throws {
                    let model = LlamaForCausalLM(config: small)
                    try emulate(footprint, in: model, quantization: nil)
                    for (_, w) in model.namedParameters() { _ = w.value }
                    model.setComputeDType(compute)
                    MemoryStats.resetPeak()
                    var rng = SplitMix64(seed: 3)
                    let ids = (0..<length).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
                    _ = try model.tokenLosses(ids: ids, context: try model.context(length: length))
                }
                try run()
                p[li][ti] = Double(MemoryStats.peak - before)
            }
        }
        BufferCache.drain()
        let fit = fitBilinear(p, t1, t2, layers: (1, 2))
        let baseline = Machine.residentBytes() + processOverhead
        let compressed = footprint.stored.values.reduce(0, +)   // outside the tensor counter
        return lengths.map { Int(fit.bytes(layers: config.numHiddenLayers, tokens: $0)) + baseline + compressed }
    }

    /// Gives a probe model the allocations of the real base: its compressed projections as all-zero NF4 matrices
    /// (they dequantize into tensors of the same size), its 16-bit embedding as an all-zero table.
    /// Weights kept in bf16 for bf16 compute are left to `setComputeDType`, which converts the probe's own.
    static func emulate(_ footprint: FrozenFootprint, in model: LlamaForCausalLM, quantization: Quantization?) throws {
        guard footprint.stored.keys.contains(where: { !footprint.bf16.contains($0) }) else { return }
        let embedding16 = footprint.stored[model.model.embed_tokens.path + ".weight"] != nil
        model.quantizeAsZeros(quantization ?? Quantization(), embedding16: embedding16)
    }

    /// a + b·L + c·T + d·L·T through the peaks p[j][i] at the depths `layers` and lengths T = t1, t2.
    static func fitBilinear(_ p: [[Double]], _ t1: Int, _ t2: Int, layers: (Int, Int)) -> RunPlan.Fit {
        let dt = Double(t2 - t1), dl = Double(layers.1 - layers.0)
        let slope1 = (p[0][1] - p[0][0]) / dt, slope2 = (p[1][1] - p[1][0]) / dt
        let d = (slope2 - slope1) / dl, c = slope1 - d * Double(layers.0)
        let i1 = p[0][0] - slope1 * Double(t1), i2 = p[1][0] - slope2 * Double(t1)
        let b = (i2 - i1) / dl, a = i1 - b * Double(layers.0)
        return RunPlan.Fit(a: a, b: b, c: c, d: d)
    }

    /// The recipe's model config, read without loading weights.
    public static func modelConfig(_ recipe: Recipe) throws -> LlamaConfig {
        var config = try ModelSource.config(recipe.model.path)
        if let scaling = recipe.model.rope_scaling {
            try scaling.validate(rotaryDim: config.rotaryDim, where: "recipe model.rope_scaling")
            config = config.withRopeScaling(scaling)
        }
        return config
    }

    /// Throws, naming the first length whose forward pass (evaluation) would not fit in memory.
    public static func checkForward(_ config: LlamaConfig, lengths: [Int], what: String,
                                    footprint: FrozenFootprint = FrozenFootprint(),
                                    compute: ComputeDType = .fp32) throws {
        let peaks = try forwardPeaks(config, lengths: lengths, footprint: footprint, compute: compute)
        let (available, source) = Machine.availableMemory()
        for (length, peak) in zip(lengths, peaks) where peak > available {
            throw LongTuneError(String(format: "%@ %d: the forward pass needs ~%.1f GiB, %.1f GiB are available (%@); "
                                     + "use shorter lengths", what, length, Double(peak) / 1_073_741_824,
                                     Double(available) / 1_073_741_824, source))
        }
    }

    /// Frozen weights (those kept compressed, `footprint`, apart and first when there are any), trainable tensors,
    /// gradients and AdamW moments, from the shapes.
    public static func exactParts(_ config: LlamaConfig, _ adapter: LoRAConfig,
                                  footprint: FrozenFootprint = FrozenFootprint()) throws -> [RunPlan.Part] {
        let model = LlamaForCausalLM(config: config)
        let extras = Set(model.extraModules(adapter.trainable).flatMap(\.parameterShapes).map(\.0))
        let compressed = footprint.stored.filter { !extras.contains($0.key) }   // a trained table is widened to fp32
        let all = model.parameterShapes()
        let frozen = all.filter { !extras.contains($0.0) && compressed[$0.0] == nil }
            .reduce(0) { $0 + $1.1.reduce(1, *) }
        let extraCount = all.filter { extras.contains($0.0) }.reduce(0) { $0 + $1.1.reduce(1, *) }
        let loraCount = try model.loraTargets(adapter.targets)
            .reduce(0) { $0 + adapter.rank * ($1.inFeatures + $1.outFeatures) }
        let trainable = extraCount + loraCount
        let compressedParts = compressed.isEmpty ? [] : [
            RunPlan.Part(name: "frozen weights kept compressed (\(footprint.kinds.joined(separator: ", ")))",
                         bytes: compressed.values.reduce(0, +), how: "shapes")]
        return compressedParts + [
                .init(name: "frozen weights (fp32)", bytes: 4 * frozen, how: "shapes"),
                .init(name: "trainable tensors (LoRA + extras)", bytes: 4 * trainable, how: "shapes"),
                .init(name: "their gradients", bytes: 4 * trainable, how: "shapes"),
                .init(name: "AdamW moments", bytes: 8 * trainable, how: "shapes")]
    }

    /// Fits each moment's non-exact memory over models of 3 and 4 layers at two short lengths. The step's
    /// peak is the largest moment's, and which moment that is can change with the depth and the length, so
    /// each moment is fitted alone and the largest is taken at the run's shape (docs/CONVENTIONS.md §13).
    /// The fits of each moment, and the seconds of the deepest, longest probe's second step (`StepRates`).
    static func probe(_ recipe: Recipe, config: LlamaConfig,
                      checkpointing: Bool) throws -> (fits: [RunPlan.Fit], seconds: Double) {
        let (t1, t2) = try probeLengths(recipe)
        var seconds = 0.0
        var p = [[[Double]]](repeating: [[0, 0], [0, 0]], count: momentCount)   // [moment][depth][length]
        for (li, layers) in [probeLayers.0, probeLayers.1].enumerated() {
            let small = config.withLayers(layers)
            // The tensor counter sees fp32 tensors only: not the compressed weights' storage.
            let footprint = try footprint(recipe, small)
            let exact = Double(try exactParts(small, recipe.adapter, footprint: footprint)
                .dropFirst(footprint.stored.isEmpty ? 0 : 1).reduce(0) { $0 + $1.bytes })
            for (ti, length) in [t1, t2].enumerated() {
                let (peaks, time) = try momentPeaks(recipe, config: small, length: length, checkpointing: checkpointing)
                for m in 0..<momentCount { p[m][li][ti] = Double(peaks[m]) - exact }
                seconds = time
            }
        }
        BufferCache.drain()
        return (p.map { fitBilinear($0, t1, t2, layers: probeLayers) }, seconds)
    }

    /// The recipe's base footprint at the shape `config` (a probe's depth or the whole model).
    static func footprint(_ recipe: Recipe, _ config: LlamaConfig) throws -> FrozenFootprint {
        try FrozenFootprint.of(recipe.model.path, config: config, quantization: recipe.model.frozenStorage,
                               compute: recipe.model.compute_dtype)
    }

    /// Depths of the probe models: enough layers that every moment below exists in both (a frozen
    /// embedding has no backward step, and then the bottom layer is the last one).
    static let probeLayers = (3, 4)

    /// The moments of a step whose peaks are fitted apart: the forward pass with the loss; the loss's
    /// backward; the final norm's; the top layer's (with checkpointing: its recomputation while every
    /// layer's input is still kept); the layers below; the embedding's backward; clipping and AdamW; and with
    /// checkpointing the replay of the top layer's MLP slices and of the layers' below. A slice has a fixed size,
    /// so at short lengths the slices can be a layer's peak and at long ones its attention: fitted as one moment,
    /// the switch would be missed.
    static let momentCount = 9

    /// The engine's tensor peak over two optimizer steps of the trainer's own code (one sequence per
    /// pass: gradient accumulation adds into the same gradients).
    /// With a `share`, one sequence-parallel rank's (docs/CONVENTIONS.md §17; tests give it a local exchange).
    public static func stepPeak(_ recipe: Recipe, config: LlamaConfig, length: Int, checkpointing: Bool,
                                share: SequenceShare? = nil) throws -> Int {
        try momentPeaks(recipe, config: config, length: length, checkpointing: checkpointing, share: share).peaks.max()!
    }

    /// The tensor peak of each moment (`momentCount`), the largest over two optimizer steps, relative to
    /// the live bytes before the model was built; and the seconds of the second step (the first warms up).
    static func momentPeaks(_ recipe: Recipe, config: LlamaConfig, length: Int, checkpointing: Bool,
                            share: SequenceShare? = nil) throws -> (peaks: [Int], seconds: Double) {
        let before = MemoryStats.liveBytes
        var peaks = [Int](repeating: 0, count: momentCount), seconds = 0.0
        func sinceLast() -> Int { defer { MemoryStats.resetPeak() }; return MemoryStats.peak - before }
        MemoryStats.resetPeak()
        func run() throws {   // the probe's tensors are freed when this returns
            let model = LlamaForCausalLM(config: config)
            try emulate(try footprint(recipe, config), in: model, quantization: recipe.model.frozenStorage)
            let lora = try LoRAModel(model, config: recipe.adapter, seed: 1)
            model.setComputeDType(recipe.model.compute_dtype)
            MemoryStats.resetPeak()   // not the fp32 weights' conversion, which `exactParts` does not count either
            let optimizer = Trainer.optimizer(lora, recipe.training)
            var rng = SplitMix64(seed: 3)
            let ids = (0..<length).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
            for _ in 0..<2 {
                let start = DispatchTime.now().uptimeNanoseconds
                defer { seconds = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
                var backward: [Int] = [], slices: [Int] = []
                Graph.afterRowwiseTail = { slices.append(sinceLast()) }
                defer { Graph.afterRowwiseTail = nil }
                try TrainingStep.run(lora, ids: ids, attention: recipe.attentionMode, checkpointLayers: checkpointing,
                                     share: share, afterForward: { peaks[0] = max(peaks[0], sinceLast()) },
                                     afterBackwardStep: { _ in backward.append(sinceLast()) })
                peaks[7] = max(peaks[7], slices.first ?? 0)
                peaks[8] = max(peaks[8], slices.dropFirst().max() ?? 0)
                // Backward steps: the loss, the final norm, the top layer, …, the embedding (when it trains).
                // (Nothing trains: no backward steps, every backward moment 0.)
                func at(_ i: Int) -> Int { i < backward.count ? backward[i] : 0 }
                let middle = backward.count > 4 ? backward[3..<(backward.count - 1)].max()! : 0
                let moments = [at(0), at(1), at(2), middle, backward.last ?? 0]
                for (m, v) in moments.enumerated() { peaks[1 + m] = max(peaks[1 + m], v) }
                _ = clipGradients(lora.trainableParameters, maxNorm: recipe.training.max_grad_norm)
                optimizer.update(lrScale: 1)
                peaks[6] = max(peaks[6], sinceLast())
            }
        }
        try run()
        return (peaks, seconds)
    }

    /// Two short lengths at which the recipe's attention is valid: the longest up to min(context, 2048),
    /// and the longest up to half of that. The peak is the largest of the step's moments, each linear in T;
    /// below ~1024 tokens a moment with large fixed parts (the LM head's logit chunks) can be the largest and
    /// hide the slope of the others, so the probes are as long as 2048 allows.
    static func probeLengths(_ recipe: Recipe) throws -> (Int, Int) {
        var t2 = min(recipe.model.context_length, 2048)
        while t2 >= 2, !isValid(t2, recipe) { t2 -= 1 }
        var t1 = t2 / 2
        while t1 >= 2, !isValid(t1, recipe) { t1 -= 1 }
        guard t1 >= 2 else {
            throw LongTuneError("plan: no two lengths up to 2048 tokens suit the recipe's attention (S2 group ratio "
                                + "\(recipe.attention.group_ratio)); choose a group_ratio whose groups are even "
                                + "at short lengths")
        }
        return (t1, t2)
    }

    static func isValid(_ t: Int, _ recipe: Recipe) -> Bool {
        guard t >= 2 else { return false }
        if case .s2(let ratio, _) = recipe.attentionMode {
            return (try? AttentionLayout.s2GroupSize(length: t, ratio: ratio)) != nil
        }
        return true
    }

    /// The largest length ≤ t the recipe's attention accepts (S2: a multiple of the group granularity).
    static func validContext(_ t: Int, _ recipe: Recipe) -> Int {
        var x = t / 256 * 256
        while x > 0, !isValid(x, recipe) { x -= 256 }
        return max(x, 0)
    }
}

/// One rank's rows of a sequence under `attention.sequence_parallel` P (docs/CONVENTIONS.md §17): 1/P of the tokens,
/// and a halo of half an S2 group (group_ratio / 2 of the tokens) on all but the first rank.
struct SequenceShareSize {
    let rowFraction: Double, haloFraction: Double

    init(_ recipe: Recipe) {
        let p = recipe.attention.sequence_parallel
        rowFraction = 1 / Double(p)
        haloFraction = p > 1 ? recipe.attention.group_ratio / 2 : 0
    }

    func rows(of tokens: Int) -> Int { Int((Double(tokens) * rowFraction).rounded(.up)) }
    func haloRows(of tokens: Int) -> Int { Int(Double(tokens) * haloFraction) }
}
