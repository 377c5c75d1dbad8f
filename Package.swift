// swift-tools-version:6.0
import PackageDescription

// Kernels are SIMD code: they need optimisation and the build machine's vector unit
// (gen is built from source on the machine that runs it, like `-march=native` in llama.cpp).
let fast: [SwiftSetting] = [
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
            name: "GenKit",
            dependencies: ["COpenBLAS", "CSystem"],
            swiftSettings: fast
        ),
        .executableTarget(
            name: "gen",
            dependencies: ["GenKit", "CSystem"],
            swiftSettings: fast
        ),
        .testTarget(
            name: "GenKitTests",
            dependencies: ["GenKit"],
            resources: [.copy("Fixtures")],
            swiftSettings: fast
        ),
        .testTarget(
            name: "GenCLITests",
            dependencies: ["GenKit", "gen"]
        ),
    ],
    swiftLanguageModes: [.v5]
)
