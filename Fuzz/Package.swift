// swift-tools-version:6.2
// libFuzzer targets for what parses bytes or strings from outside (scripts/fuzz builds them with
// -sanitize=fuzzer,address). A package of its own: an executable whose main is libFuzzer's cannot
// be built by a plain `swift build` of the root package.
import PackageDescription

let package = Package(
    name: "swift-session-cache-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-session-cache", path: "..")],
    targets: [
        .target(name: "CFuzzer"),
        .executableTarget(
            name: "FuzzReplyReader",
            dependencies: ["CFuzzer", .product(name: "HiredisNIO", package: "swift-session-cache")]
        ),
        .executableTarget(
            name: "FuzzTopology",
            dependencies: ["CFuzzer", .product(name: "HiredisNIO", package: "swift-session-cache")]
        ),
        .executableTarget(
            name: "FuzzURL",
            dependencies: ["CFuzzer", .product(name: "HiredisNIO", package: "swift-session-cache")]
        ),
        .executableTarget(
            name: "FuzzSessionInputs",
            dependencies: ["CFuzzer", .product(name: "SessionCache", package: "swift-session-cache")]
        ),
        .executableTarget(
            name: "FuzzStore",
            dependencies: [
                "CFuzzer",
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "EmbeddedRedis", package: "swift-session-cache"),
            ]
        ),
    ]
)
