@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOCore
import SessionCache
import Testing

/// Where a parametrized test's store lives: suites of store, expiry and lock tests run on a
/// standalone server and a cluster, and a representative few on a TLS cluster too.
enum Deployment: String, Sendable, CustomTestStringConvertible {
    /// One redis-server.
    case standalone
    /// The embedded 3-primary Redis Cluster (with a replica each).
    case cluster
    /// The same cluster on TLS only (`tls-cluster`, `tls-replication`, both ports listed).
    case tlsCluster

    /// What most parametrized tests run on.
    static let standaloneAndCluster: [Deployment] = [.standalone, .cluster]
    /// Every deployment, for the tests that carry a layer's main guarantee (TLS adds nothing to
    /// the rest but time).
    static let everywhere: [Deployment] = [.standalone, .cluster, .tlsCluster]

    var testDescription: String { rawValue }
}

/// A redis-server (or a cluster) with keyspace notifications, a client, and a store on it, for
/// one test.
struct StoreFixture: Sendable {
    /// The server; on a cluster, its first node.
    let server: RedisServer
    let client: HiredisClient
    let store: SessionStore
    /// The cluster, when the test runs on one.
    var cluster: RedisCluster? = nil

    var keyspace: SessionKeyspace { store.keyspace }

    /// The PTTL of a key in milliseconds (-2: missing, -1: no TTL).
    func pttl(_ key: String) async throws -> Int {
        try await client.send(RESPCommand("PTTL", .string(key))).int ?? -3
    }

    /// The name of a session's timer, from its hash (nil when it has no data).
    func timer(_ id: String) async throws -> String? {
        let fields =
            try await client.send(
                RESPCommand(
                    "HMGET", .string(keyspace.session(id)), .string(SessionKeyspace.Field.idle), .string(SessionKeyspace.Field.deadline))
            ).array ?? []
        guard fields.count == 2, let idle = fields[0].int, let deadline = fields[1].int else { return nil }
        return keyspace.timer(id, idleMilliseconds: idle, deadline: deadline)
    }

    /// The PTTL of a session's timer (-2 when it has none).
    func timerTTL(_ id: String) async throws -> Int {
        guard let timer = try await timer(id) else { return -2 }
        return try await pttl(timer)
    }

    /// A field of a session's hash.
    func field(_ id: String, _ name: String) async throws -> String? {
        try await client.send(RESPCommand("HGET", .string(keyspace.session(id)), .string(name))).string
    }

    /// Redis's clock, in Unix milliseconds.
    func redisNow() async throws -> Int {
        let time = try await client.send(RESPCommand("TIME")).array ?? []
        return (time.first?.int ?? 0) * 1000 + (time.last?.int ?? 0) / 1000
    }

    /// Every key in the database (SCAN, as an operator would).
    func allKeys() async throws -> [String] {
        try await client.scanKeys()
    }

    /// A second, independent store (its own client and connections) on the same server.
    func secondStore(_ configuration: SessionStoreConfiguration) throws -> (HiredisClient, SessionStore) {
        let other = try HiredisClient.started(configuration: client.configuration)
        return (other, try SessionStore(client: other, configuration: configuration))
    }
}

/// The store configuration tests start from: namespace `test`, 64 buckets (so that sweeps are
/// cheap and buckets are shared often).
func testConfiguration() -> SessionStoreConfiguration {
    var configuration = SessionStoreConfiguration(namespace: "test")
    configuration.bucketCount = 64
    // Tests wait for sessions to end: idle timeouts of a fraction of a second.
    configuration.customIdleTimeouts = .milliseconds(1) ... .seconds(30 * 24 * 3600)
    return configuration
}

func withStore<T: Sendable>(
    _ options: RedisServer.Options = .init(notifyKeyspaceEvents: "Ex"),
    on deployment: Deployment = .standalone,
    configure: (inout SessionStoreConfiguration) -> Void = { _ in },
    _ body: (StoreFixture) async throws -> T
) async throws -> T {
    // Reconnect and topology notices would flood the test output: warnings and above, to stderr.
    ToolLogging.bootstrap()
    var configuration = testConfiguration()
    configure(&configuration)
    switch deployment {
    case .standalone:
        return try await RedisServer.with(options) { server in
            let client = try HiredisClient.started(configuration: server.configuration)
            return try await run(
                StoreFixture(server: server, client: client, store: try SessionStore(client: client, configuration: configuration)), body)
        }
    case .cluster, .tlsCluster:
        let cluster = try await (deployment == .cluster ? SharedCluster.shared : SharedCluster.sharedTLS).fresh(options)
        let client = try HiredisClient.started(configuration: cluster.configuration)
        return try await run(
            StoreFixture(
                server: cluster.nodes[0], client: client, store: try SessionStore(client: client, configuration: configuration),
                cluster: cluster), body)
    }
}

/// One embedded cluster for every cluster-parametrized test of the process (a cluster takes
/// seconds to form): emptied before each test. Tests that kill, pause or reconfigure nodes start
/// clusters of their own. Its servers outlive a test process that crashed or was run by hand:
/// scripts/test kills every leftover test server (their pid files) when it ends.
actor SharedCluster {
    static let shared = SharedCluster(tls: false)
    /// A second one on TLS, kept beside the first (tests alternate between them).
    static let sharedTLS = SharedCluster(tls: true)
    private let tls: Bool
    private var certificates: TLSCertificates?
    private var cluster: RedisCluster?
    private var options: RedisServer.Options?

    private init(tls: Bool) {
        self.tls = tls
    }

    /// The cluster, with no keys left by an earlier test.
    func fresh(_ options: RedisServer.Options) async throws -> RedisCluster {
        if let cluster, self.options?.notifyKeyspaceEvents == options.notifyKeyspaceEvents,
            self.options?.appendOnly == options.appendOnly
        {
            for node in try await cluster.primaries() { _ = try await cluster.send(RESPCommand("FLUSHALL"), to: node) }
            return cluster
        }
        await cluster?.stop()
        var clusterOptions = RedisCluster.Options()
        clusterOptions.node = options
        if tls {
            if certificates == nil { certificates = try await TLSCertificates.make() }
            clusterOptions.node.tls = certificates
            clusterOptions.node.plaintextPortToo = true  // CLUSTER SHARDS then lists both ports
        }
        let started = try await RedisCluster.start(clusterOptions)
        cluster = started
        self.options = options
        return started
    }
}

private func run<T: Sendable>(_ fixture: StoreFixture, _ body: (StoreFixture) async throws -> T) async throws -> T {
    let client = fixture.client
    do {
        let result = try await body(fixture)
        await client.close()
        return result
    } catch {
        await client.close()
        throw error
    }
}

/// Waits for Redis to report that keys expired (keyspace notification), at most `timeout`.
/// Subscribe first, then trigger: `let expiry = try await ExpiryWatch(server); ...; try await expiry.wait(for: key)`.
final class ExpiryWatch: Sendable {
    private let subscriber: HiredisSubscriber

    convenience init(_ server: RedisServer) async throws {
        try await self.init(server.configuration)
    }

    /// Watches every primary the fixture's client talks to (notifications are node-local: a
    /// pattern subscription goes to every primary of a cluster).
    convenience init(_ fixture: StoreFixture) async throws {
        try await self.init(fixture.client.configuration)
    }

    init(_ configuration: HiredisConfiguration) async throws {
        subscriber = HiredisSubscriber.started(configuration: configuration)
        try await subscriber.subscribe(patterns: ["__keyevent@0__:expired"])
    }

    func wait(for key: String, timeout: Duration = .seconds(10)) async throws -> Bool {
        try await wait(forAll: [key], timeout: timeout)
    }

    /// Waits until every one of `keys` expired; false after `timeout`.
    func wait(forAll keys: Set<String>, timeout: Duration = .seconds(20)) async throws -> Bool {
        let subscriber = self.subscriber
        return try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                var missing = keys
                for await event in subscriber.events {
                    if case .message(_, _, let payload) = event { missing.remove(String(buffer: payload)) }
                    if missing.isEmpty { return true }
                }
                return false
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            let first = try await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    func close() async { await subscriber.close() }
}

/// Runs `body` expecting a SessionError and returns it.
func expectSessionError(sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async -> SessionError? {
    do {
        try await body()
        Issue.record("expected a SessionError, got success", sourceLocation: sourceLocation)
    } catch let error as SessionError {
        return error
    } catch {
        Issue.record("expected a SessionError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

extension SessionLock {
    /// Locks whose wake-up subscription runs in a task of its own until ``SessionLock/close()``.
    static func started(store: SessionStore, configuration: SessionLockConfiguration = SessionLockConfiguration()) -> SessionLock {
        let locks = SessionLock(store: store, configuration: configuration)
        Task { try? await locks.run() }
        return locks
    }
}

/// The test worker binary, built with the tests.
let workerPath = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("SessionTestWorker").path

/// The ClockSkew shim preloaded into a worker or a redis-server to move its wall clock. Built
/// beside the tests; scripts/sanitize points CLOCK_SKEW_SHIM at an uninstrumented build, since a
/// sanitizer-instrumented library cannot be preloaded into a redis-server that is not.
let clockSkewShimPath =
    ProcessInfo.processInfo.environment["CLOCK_SKEW_SHIM"]
    ?? URL(fileURLWithPath: workerPath).deletingLastPathComponent().appendingPathComponent("libClockSkew.so").path

/// Starts a worker and waits until it prints `line`.
func startWorker(_ arguments: [String], waitFor line: String) async throws -> ChildProcess {
    let (lines, feed) = AsyncStream.makeStream(of: String.self)
    let process = try ChildProcess(executable: workerPath, arguments: arguments) { feed.yield($0) }
    for await printed in lines where printed == line { return process }
    return process
}

func counter(_ store: SessionStore, _ id: String) async throws -> Double {
    try await store.metadata(id)["counter"]?.numberValue ?? 0
}
