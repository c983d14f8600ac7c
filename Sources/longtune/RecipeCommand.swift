import ArgumentParser
import Engine
import Foundation
import Training

/// `longtune recipe explain`: every recipe key with its type, default (or a recipe's value) and meaning.
struct RecipeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recipe", abstract: "Describe recipes.", subcommands: [Explain.self])

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every recipe key: its type, its default (or the value in RECIPE) and what it does.")

        @Argument(help: "A recipe whose values to show instead of the defaults.") var recipe: String?
        @Option(name: .customLong("set"), help: "Override a value of RECIPE, as in train (repeatable).")
        var overrides: [String] = []

        func run() throws {
            let values = try recipe.map { try Recipe.load(URL(fileURLWithPath: $0), overrides: overrides) }
            print(Recipe.explain(values: values))
        }
    }
}
