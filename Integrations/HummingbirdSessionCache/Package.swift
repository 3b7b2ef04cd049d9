// swift-tools-version: 6.0
// Hummingbird 2 integration of swift-session-cache: a PersistDriver on the Redis client and a
// session middleware on SessionStore. A package of its own, so that users of the core do not
// build Hummingbird.
import PackageDescription

let package = Package(
    name: "swift-session-cache-hummingbird",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "HummingbirdSessionCache", targets: ["HummingbirdSessionCache"])
    ],
    dependencies: [
        .package(name: "swift-session-cache", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
    ],
    targets: [
        .target(
            name: "HummingbirdSessionCache",
            dependencies: [
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The example chat (Examples/Chat): in this package so that Hummingbird builds once.
        .executableTarget(
            name: "ChatExample",
            dependencies: [
                "HummingbirdSessionCache",
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "HummingbirdSessionCacheTests",
            dependencies: [
                "HummingbirdSessionCache",
                .product(name: "EmbeddedRedis", package: "swift-session-cache"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
    ]
)
