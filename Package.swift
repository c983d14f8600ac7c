// swift-tools-version:6.0
import PackageDescription

// Release builds use the host CPU's full instruction set (AVX-512 and FMA on this machine's
// EPYC): SIMD16<Float> then compiles to zmm registers and `addingProduct` to vfmadd.
let fast: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "native"], .when(configuration: .release)),
]

let package = Package(
    name: "LongTune",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "longtune", targets: ["longtune"]),
        .library(name: "Engine", targets: ["Engine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CDNNL", path: "Sources/CDNNL",
            providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]),
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "Engine", dependencies: ["CBLAS", "CDNNL", "CKernels"], swiftSettings: fast),
        .target(name: "Llama", dependencies: ["Engine"], swiftSettings: fast),
        .target(name: "Adapters", dependencies: ["Engine", "Llama"], swiftSettings: fast),
        .target(name: "Formats", dependencies: ["Engine", "Llama", "Datasets"], swiftSettings: fast),
        .target(name: "Datasets", dependencies: ["Engine", "CHDF5"], swiftSettings: fast),
        .target(name: "Training", dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Yams", "CMPI"],
                swiftSettings: fast),
        .target(name: "Evaluation", dependencies: ["Engine", "Llama", "Datasets"], swiftSettings: fast),
        .target(name: "Report", dependencies: ["Engine", "Formats"], swiftSettings: fast),
        .executableTarget(
            name: "longtune",
            dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Evaluation", "Training", "Report",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: fast),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "TestSupport"], swiftSettings: fast),
        .testTarget(name: "DatasetsTests", dependencies: ["Engine", "Datasets", "TestSupport"], resources: [.copy("Fixtures")],
                    swiftSettings: fast),
        .testTarget(name: "TrainingTests",
                    dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Training", "Report", "TestSupport"],
                    resources: [.copy("Fixtures")], swiftSettings: fast),
        .testTarget(name: "LlamaTests",
                    dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Evaluation", "Training", "Report", "TestSupport"],
                    resources: [.copy("Fixtures")], swiftSettings: fast),
    ],
    swiftLanguageModes: [.v5]
)
