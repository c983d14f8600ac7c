import ArgumentParser
import Engine
import Foundation
import Training

/// `longtune plan RECIPE`: the run's predicted memory by part and time, before it starts.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Predict a recipe's peak memory (by part) and time per step, and the largest context that fits.")

    @Argument(help: "The recipe (recipes/*.yaml).") var recipe: String
    @Option(name: .customLong("set"),
            help: "Override a recipe value, e.g. --set model.context_length=32768 (repeatable).")
    var overrides: [String] = []
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let r = try Recipe.load(URL(fileURLWithPath: recipe), overrides: overrides)
        let plan = try Planner.plan(r)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
            return
        }
        print(Self.text(plan, recipe: r, source: recipe))
    }

    static func gib(_ b: Int) -> String { String(format: "%6.2f", Double(b) / 1_073_741_824) }

    static func text(_ p: RunPlan, recipe r: Recipe, source: String) -> String {
        let t = r.training
        let perRank = r.attention.sequence_parallel > 1
            ? "; per rank of \(r.attention.sequence_parallel) sharing each sequence (sequence parallel)" : ""
        var lines = ["plan for \(source): \(r.model.path), \(p.layers) layers, \(p.context) tokens × "
                     + "\(p.sequencesPerStep) sequence(s) per step, attention \(r.attention.mode.rawValue), "
                     + "checkpointing "
                     + (t.activation_checkpointing ? "on" : "off")
                     + perRank,
                     "part                                                   GiB   from"]
        for part in p.parts {
            lines.append(part.name.padding(toLength: 50, withPad: " ", startingAt: 0) + gib(part.bytes)
                         + "   " + part.how)
        }
        lines.append("predicted peak RSS".padding(toLength: 50, withPad: " ", startingAt: 0) + gib(p.peakRSSBytes)
                     + "   (engine tensors \(gib(p.tensorPeakBytes).trimmingCharacters(in: .whitespaces)))")
        lines.append("available".padding(toLength: 50, withPad: " ", startingAt: 0) + gib(p.availableBytes)
                     + "   \(p.availableSource)")
        lines.append(p.fits ? "fits" : "DOES NOT FIT: " + Planner.refusal(p, recipe: source))
        if p.secondsPerStep > 0 {
            lines.append(String(format: "time per step %.1f s (%.3g FLOPs/token × %ld tokens; probed here: attention "
                                + "%.0f GFLOP/s, the rest of the step %.0f GFLOP/s); %ld steps: %.1f min",
                                p.secondsPerStep, p.flopsPerToken,
                                p.context * p.sequencesPerStep / r.attention.sequence_parallel,
                                p.attentionGFlops, p.stepGFlops, t.steps, p.secondsTotal / 60))
        }
        var largest = "largest context that fits: \(p.largestContext) tokens as written"
        for a in p.alternatives {
            let peak = gib(a.peakRSSBytes).trimmingCharacters(in: .whitespaces)
            largest += "; \(a.largestContext) with \(a.change) (peak at this context \(peak) GiB)"
        }
        if case .full = r.attentionMode {
            largest += "; S2-Attn changes the time (fewer scores), not the memory (attention memory is linear in "
                + "tokens either way)"
        }
        lines.append(largest)
        return lines.joined(separator: "\n")
    }
}
