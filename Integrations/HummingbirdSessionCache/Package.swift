// swift-tools-version: 6.2
// The Hummingbird integration's tests and the example chat: a package that depends on
// swift-session-cache exactly as an application does (by path here, by URL there), with the traits
// that build the integrations.
import PackageDescription

let package = Package(
    name: "swift-session-cache-hummingbird-tests",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ChatPage", targets: ["ChatPage"])
    ],
    dependencies: [
        // Both traits in both test packages: the root is then built once for both (a trait is a
        // compilation condition of every target of the package, so another set rebuilds it all).
        .package(name: "swift-session-cache", path: "../..", traits: ["Hummingbird", "Vapor"]),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
    ],
    targets: [
        // The example chat's page, shared with the Vapor package's VaporChatExample.
        .target(name: "ChatPage", dependencies: [.product(name: "SessionCache", package: "swift-session-cache")]),
        // The example chat (Examples/Chat): here so that Hummingbird builds once.
        .executableTarget(
            name: "ChatExample",
            dependencies: [
                "ChatPage",
                .product(name: "HummingbirdSessionCache", package: "swift-session-cache"),
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
                .product(name: "HummingbirdSessionCache", package: "swift-session-cache"),
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "EmbeddedRedis", package: "swift-session-cache"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
            ]
        ),
    ]
)
