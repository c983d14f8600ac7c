// swift-tools-version:6.0
import PackageDescription

import Foundation

// Release builds use the host CPU's full instruction set (AVX-512 and FMA on a Zen 4 EPYC): SIMD16<Float> then
// compiles to zmm registers and `addingProduct` to vfmadd. LONGTUNE_TARGET_CPU names another LLVM CPU instead
// (`haswell` for any AVX2 + FMA machine: the fallback build that `.ci/run` also tests; swiftc refuses the level
// names x86-64-v3/v4). Build it in its own folder (`--scratch-path .build-haswell`) to keep the native one.
var targetCPU = ["-target-cpu", "native"]
if let cpu = ProcessInfo.processInfo.environment["LONGTUNE_TARGET_CPU"], !cpu.isEmpty { targetCPU[1] = cpu }
// A CPU without AVX-512 also selects AVX2's kernel tiles at compile time (`CPU.isa`), whatever the machine running it.
let avx512CPUs = ["native", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                  "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
                  "graniterapids-d", "diamondrapids", "znver4", "znver5", "knl", "knm"]
let fast: [SwiftSetting] = [
    .unsafeFlags(targetCPU, .when(configuration: .release)),
] + (avx512CPUs.contains(targetCPU[1]) ? [] : [.define("LONGTUNE_AVX2_BUILD", .when(configuration: .release))])

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
        .target(name: "Settings", swiftSettings: fast),
        .target(name: "Engine", dependencies: ["CBLAS", "CDNNL", "CKernels", "Settings"], swiftSettings: fast),
        .target(name: "Llama", dependencies: ["Engine", "Settings"], swiftSettings: fast),
        .target(name: "Adapters", dependencies: ["Engine", "Llama", "Settings"], swiftSettings: fast),
        .target(name: "Formats", dependencies: ["Engine", "Llama", "Datasets"], swiftSettings: fast),
        .target(name: "Datasets", dependencies: ["Engine", "CHDF5"], swiftSettings: fast),
        .target(name: "Training", dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Settings", "Yams",
                                                 "CMPI"],
                swiftSettings: fast),
        .target(name: "Evaluation", dependencies: ["Engine", "Llama", "Datasets"], swiftSettings: fast),
        .target(name: "Report", dependencies: ["Engine", "Evaluation", "Training"], swiftSettings: fast),
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
                    dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Settings", "Training", "Report",
                                   "TestSupport"],
                    resources: [.copy("Fixtures")], swiftSettings: fast),
        .testTarget(name: "LlamaTests",
                    dependencies: ["Engine", "Llama", "Adapters", "Formats", "Datasets", "Evaluation", "Training", "Report", "TestSupport"],
                    resources: [.copy("Fixtures")], swiftSettings: fast),
    ],
    swiftLanguageModes: [.v5]
)
