// swift-tools-version:6.0
import PackageDescription

// Kernels are SIMD code: they need the build machine's vector unit (gen is built from source on
// the machine that runs it, like `-march=native` in llama.cpp) and run without bounds checks.
// Only the kernel target is built unchecked: the code that parses files and arguments keeps its
// preconditions and bounds checks.
let native: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-march=native"])]
let unchecked: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo", "-Xcc", "-march=native"], .when(configuration: .release)),
    .unsafeFlags(["-Xcc", "-march=native"], .when(configuration: .debug)),
]

let package = Package(
    name: "gen",
    products: [
        .executable(name: "gen", targets: ["gen"]),
        .library(name: "GenKit", targets: ["GenKit"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/COpenBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(name: "CSystem", path: "Sources/CSystem"),
        .target(
            name: "GenKernels",
            dependencies: ["COpenBLAS", "CSystem"],
            swiftSettings: unchecked
        ),
        .target(
            name: "GenKit",
            dependencies: ["GenKernels", "CSystem"],
            swiftSettings: native
        ),
        .executableTarget(
            name: "gen",
            dependencies: ["GenKit", "CSystem"],
            swiftSettings: native
        ),
        // Scratch folders for both test targets.
        .target(name: "TestScratch", path: "Tests/TestScratch"),
        .testTarget(
            name: "GenKitTests",
            dependencies: ["GenKit", "GenKernels", "TestScratch"],
            resources: [.copy("Fixtures")],
            swiftSettings: native
        ),
        .testTarget(
            name: "GenCLITests",
            dependencies: ["GenKit", "GenKernels", "gen", "TestScratch"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
