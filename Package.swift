// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "swift-session-cache",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "HiredisNIO", targets: ["HiredisNIO"]),
        .library(name: "EmbeddedRedis", targets: ["EmbeddedRedis"]),
        .library(name: "SessionCache", targets: ["SessionCache"]),
        // The framework integrations: empty unless their trait is enabled (see `traits`).
        .library(name: "HummingbirdSessionCache", targets: ["HummingbirdSessionCache"]),
        .library(name: "VaporSessionCache", targets: ["VaporSessionCache"]),
        .executable(name: "session-load", targets: ["SessionLoad"]),
        .executable(name: "session-cache", targets: ["SessionCacheCLI"]),
        .executable(name: "redis-example", targets: ["RedisExample"]),
        // A test tool: LD_PRELOAD it to run an app server whose wall clock is off (CLOCK_SKEW_MS).
        .library(name: "ClockSkew", type: .dynamic, targets: ["ClockSkew"]),
    ],
    // Opt-in, so that users of the core never build a web framework: depend on this package with
    // `traits: ["Hummingbird"]` (or "Vapor") and use the integration's product.
    traits: [
        .trait(name: "Hummingbird", description: "HummingbirdSessionCache: a persist driver and a session middleware for Hummingbird 2."),
        .trait(name: "Vapor", description: "VaporSessionCache: a sessions driver and lifecycle for Vapor 4."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/vapor/vapor.git", from: "4.122.0"),
        // scripts/docs: `swift package generate-documentation` (nothing links it).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.4.0"),
    ],
    targets: [
        // hiredis from the system (Debian: libhiredis-dev), for the RESP wire format.
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The Redis client: knows nothing of sessions.
        .target(
            name: "HiredisNIO",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        // The session store: sessions as Redis hashes with sliding TTLs.
        .target(
            name: "SessionCache",
            dependencies: [
                "HiredisNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The function library's source: the EmbedFunctions plugin makes it a Swift constant.
            exclude: ["Functions/sessions.lua"],
            swiftSettings: [.enableUpcomingFeature("NonisolatedNonsendingByDefault")],
            plugins: ["EmbedFunctions"]
        ),
        // Hummingbird 2: a PersistDriver on the Redis client and a session middleware on the store
        // (trait "Hummingbird").
        .target(
            name: "HummingbirdSessionCache",
            dependencies: [
                "SessionCache",
                "HiredisNIO",
                .product(name: "Hummingbird", package: "hummingbird", condition: .when(traits: ["Hummingbird"])),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth", condition: .when(traits: ["Hummingbird"])),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Vapor 4: a sessions driver on the store and the expiry listener in Vapor's lifecycle
        // (trait "Vapor").
        .target(
            name: "VaporSessionCache",
            dependencies: [
                "SessionCache",
                "HiredisNIO",
                .product(name: "Vapor", package: "vapor", condition: .when(traits: ["Vapor"])),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "FunctionEmbedder", path: "Tools/FunctionEmbedder"),
        .plugin(name: "EmbedFunctions", capability: .buildTool(), dependencies: ["FunctionEmbedder"]),
        // session-load's samples of the live heap (glibc's mallinfo2), for scripts/soak.
        .target(name: "MallocStatistics", path: "Tools/MallocStatistics"),
        .target(
            name: "ClockSkew",
            path: "Tools/ClockSkew",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // Starts and stops a real redis-server on loopback: for tests, benchmarks and the example.
        .target(
            name: "EmbeddedRedis",
            dependencies: [
                "HiredisNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "RedisExample",
            dependencies: ["HiredisNIO", "EmbeddedRedis"],
            path: "Examples/RedisExample"
        ),
        // Benchmarks: reference tools (redis-benchmark) and ours in one run, reported as ratios.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                "EmbeddedRedis",
                "HiredisNIO",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/BenchmarkSupport"
        ),
        .executableTarget(
            name: "ClientBenchmark",
            dependencies: [
                "HiredisNIO", "EmbeddedRedis", "BenchmarkSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/ClientBenchmark"
        ),
        // The load driver's fault plan and checker: plain types, unit-tested.
        .target(name: "LoadVerdict"),
        // The load driver: several app-server instances (worker processes), checks, reports.
        .executableTarget(
            name: "SessionLoad",
            dependencies: [
                "SessionCache", "HiredisNIO", "EmbeddedRedis", "LoadVerdict", "MallocStatistics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // The operator CLI.
        .executableTarget(
            name: "SessionCacheCLI",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                "SessionCache", "HiredisNIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // A listener in a process of its own, for the tests that kill an instance.
        .executableTarget(
            name: "SessionTestWorker",
            dependencies: ["SessionCache", "HiredisNIO", "EmbeddedRedis"],
            path: "Tools/SessionTestWorker"
        ),
        .executableTarget(
            name: "ClusterBenchmark",
            dependencies: [
                "SessionCache", "HiredisNIO", "EmbeddedRedis", "BenchmarkSupport",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/ClusterBenchmark"
        ),
        .executableTarget(
            name: "ExpiryBenchmark",
            dependencies: [
                "SessionCache", "HiredisNIO", "EmbeddedRedis", "BenchmarkSupport",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/ExpiryBenchmark"
        ),
        .executableTarget(
            name: "LockBenchmark",
            dependencies: [
                "SessionCache", "HiredisNIO", "EmbeddedRedis", "BenchmarkSupport",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/LockBenchmark"
        ),
        .executableTarget(
            name: "StoreBenchmark",
            dependencies: ["SessionCache", "HiredisNIO", "EmbeddedRedis", "BenchmarkSupport"],
            path: "Benchmarks/StoreBenchmark"
        ),
        .testTarget(
            name: "SessionCacheTests",
            dependencies: [
                "SessionCache",
                "TestSupport",
                "HiredisNIO",
                "EmbeddedRedis",
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // RediStack's public names (vapor/redis re-exports them), to prove that ours coexist.
        .target(name: "RediStackStandIn", path: "Tests/RediStackStandIn"),
        .testTarget(
            name: "CoexistenceTests",
            dependencies: ["RediStackStandIn", "HiredisNIO", "SessionCache", "EmbeddedRedis"]
        ),
        // Unit tests of the session module's plain parts: no server.
        .testTarget(
            name: "SessionCacheUnitTests",
            dependencies: ["SessionCache", "HiredisNIO", "LoadVerdict", .product(name: "NIOPosix", package: "swift-nio")]
        ),
        // Helpers shared by the test targets: a fake server for misbehaving peers, expectations.
        .target(
            name: "TestSupport",
            dependencies: [
                "HiredisNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"
        ),
        // The client's plain parts (reply reader, state machines, routing, configuration) and its
        // behaviour against fake peers: no redis-server, seconds to run.
        .testTarget(
            name: "HiredisNIOUnitTests",
            dependencies: [
                "HiredisNIO",
                "CHiredis",
                "EmbeddedRedis",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The client against real redis-server processes (standalone, cluster, sentinel, TLS).
        .testTarget(
            name: "HiredisNIOTests",
            dependencies: [
                "HiredisNIO",
                "CHiredis",
                "EmbeddedRedis",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
