// swift-tools-version: 6.2
// The Vapor integration's tests and the example chat on Vapor: a package that depends on swift-session-cache exactly as an
// application does (by path here, by URL there), with the traits that build the integrations.
import PackageDescription

let package = Package(
    name: "swift-session-cache-vapor-tests",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Both traits in both test packages: the root is then built once for both (a trait is a
        // compilation condition of every target of the package, so another set rebuilds it all).
        .package(name: "swift-session-cache", path: "../..", traits: ["Hummingbird", "Vapor"]),
        .package(url: "https://github.com/vapor/vapor.git", from: "4.122.0"),
        // The example chat's page, shared with the Hummingbird example.
        .package(name: "swift-session-cache-hummingbird-tests", path: "../HummingbirdSessionCache"),
    ],
    targets: [
        // The example chat on Vapor (Examples/Chat): the Hummingbird example's page and API.
        .executableTarget(
            name: "VaporChatExample",
            dependencies: [
                .product(name: "VaporSessionCache", package: "swift-session-cache"),
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "ChatPage", package: "swift-session-cache-hummingbird-tests"),
                .product(name: "Vapor", package: "vapor"),
            ]
        ),
        .testTarget(
            name: "VaporSessionCacheTests",
            dependencies: [
                .product(name: "VaporSessionCache", package: "swift-session-cache"),
                .product(name: "SessionCache", package: "swift-session-cache"),
                .product(name: "HiredisNIO", package: "swift-session-cache"),
                .product(name: "EmbeddedRedis", package: "swift-session-cache"),
                .product(name: "VaporTesting", package: "vapor"),
            ]
        )
    ]
)
