// swift-tools-version: 6.0
// Vapor 4 integration of swift-session-cache: a session driver on SessionStore and the expiry
// listener as a lifecycle handler. A package of its own, so that users of the core do not build
// Vapor.
import PackageDescription

let package = Package(
    name: "swift-session-cache-vapor",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "VaporSessionCache", targets: ["VaporSessionCache"])
    ],
    dependencies: [
        .package(name: "swift-session-cache", path: "../.."),
        .package(url: "https://github.com/vapor/vapor.git", from: "4.122.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
    ],
    targets: [
        .target(
            name: "VaporSessionCache",
            dependencies: [
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "VaporSessionCacheTests",
            dependencies: [
                "VaporSessionCache",
                .product(name: "EmbeddedRedis", package: "swift-session-cache"),
                .product(name: "VaporTesting", package: "vapor"),
            ]
        ),
    ]
)
