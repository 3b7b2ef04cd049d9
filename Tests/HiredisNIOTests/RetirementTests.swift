@_spi(Testing) import EmbeddedRedis
import NIOCore
import TestSupport
import Testing

@testable import HiredisNIO

/// A connection that must go (its node left the cluster's topology, its primary was demoted)
/// is retired, not closed: what it carries is answered. (Closed at once, those commands failed as
/// `connectionLost`, "may have run", although the node would have answered them: a `MOVED` to
/// follow, a `READONLY` to retry, or the result.)
@Suite("Retiring connections")
struct RetirementTests {
    /// Waits until the server shows a client blocked in `BLPOP` (the command is in flight).
    private func untilBlocked(_ client: HiredisClient) async throws {
        let limit = ContinuousClock.now + .seconds(10)
        while try await client.send(RESPCommand("CLIENT", "LIST")).string?.contains("cmd=blpop") != true {
            try #require(ContinuousClock.now < limit, "the BLPOP never blocked")
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// A pool of one connection to `server`, as a client makes for a node.
    private func makePool(_ server: RedisServer) -> NodePool {
        NodePool(
            address: server.address.description, configuration: server.configuration,
            metrics: ClientMetrics(factory: server.configuration.metricsFactory),
            eventLoops: [server.configuration.eventLoopGroup.next()]
        ) { eventLoop async throws(HiredisError) in
            try await HiredisConnection.connect(configuration: server.configuration, eventLoop: eventLoop)
        }
    }

    @Test func aRetiredConnectionAnswersWhatItTookAndRefusesTheRest() async throws {
        try await withRedis { server, client in
            let connection = try await HiredisConnection.connect(configuration: server.configuration)
            let blocked = Task { try await connection.send(RESPCommand("BLPOP", "nothing", "0.3")) }
            try await untilBlocked(client)
            connection.retire(refusing: .connectionLost(reason: "retired", written: false), within: .seconds(5))
            #expect(!connection.isOpen)
            let refused = await expectRedisError { _ = try await connection.send(RESPCommand("PING")) }
            #expect(refused?.code == .connectionLost && refused?.commandMayHaveRun == false)
            let answer = try await blocked.value
            #expect(answer == .null, "the command in flight is answered")
            try await connection.closeFuture.get()  // and then it closes
        }
    }

    @Test func aRetiredConnectionStillWaitingAtItsDeadlineCloses() async throws {
        try await withRedis { server, client in
            let connection = try await HiredisConnection.connect(configuration: server.configuration)
            let blocked = Task { try await connection.send(RESPCommand("BLPOP", "nothing", "0"), timeout: .seconds(30)) }
            try await untilBlocked(client)
            let start = ContinuousClock.now
            connection.retire(refusing: .connectionLost(reason: "retired", written: false), within: .milliseconds(200))
            let lost = await expectRedisError { _ = try await blocked.value }
            #expect(lost?.code == .connectionLost && lost?.commandMayHaveRun == true)
            #expect(start.elapsed < .seconds(5))
        }
    }

    @Test func aPoolThatLeavesTheTopologyAnswersItsCommandsInFlight() async throws {
        try await withRedis { server, client in
            let pool = makePool(server)
            let running = Task { await pool.run() }
            defer { running.cancel() }
            let connection = try await pool.connection()
            let blocked = Task { try await connection.send(RESPCommand("BLPOP", "nothing", "0.3")) }
            try await untilBlocked(client)
            pool.retire(failingWith: .cannotConnect(address: pool.address, reason: "the node left the cluster topology"))
            let later = await expectRedisError { _ = try await pool.connection() }
            #expect(later?.code == .cannotConnect && later?.commandMayHaveRun == false)
            #expect(try await blocked.value == .null, "the command in flight is answered")
            try await connection.closeFuture.get()
        }
    }

    @Test func aRecycledPoolReconnectsAtOnceAndAnswersItsCommandsInFlight() async throws {
        try await withRedis { server, client in
            let pool = makePool(server)
            let running = Task { await pool.run() }
            defer {
                pool.shutDown()
                running.cancel()
            }
            let old = try await pool.connection()
            let blocked = Task { try await old.send(RESPCommand("BLPOP", "nothing", "0.3")) }
            try await untilBlocked(client)
            pool.recycle()
            let fresh = try await pool.connection()
            #expect(fresh !== old)
            #expect(try await fresh.send(RESPCommand("PING")).string == "PONG")
            #expect(try await blocked.value == .null, "the command in flight is answered")
            try await old.closeFuture.get()
        }
    }
}
