@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOCore
import TestSupport
import Testing

@Suite("Typed commands against a real redis-server")
struct TypedCommandTests {
    /// The example of ``HiredisCommand``'s documentation.
    @Test func oneCommandAndAPipelineOfSeveral() async throws {
        try await withRedis { _, client in
            let now = try await client.execute(TIME())
            #expect(now.seconds > 1_700_000_000 && (0..<1_000_000).contains(now.microseconds))
            let (set, time) = try await client.execute(SET("k", "v"), TIME())
            #expect(try set.get() == true)
            #expect(try time.get().totalMicroseconds >= now.totalMicroseconds)
            // NX on an existing key: not set, and the pipeline's other results stand.
            let (again, fields) = try await client.execute(SET("k", "w", onlyIfAbsent: true, expiresIn: .seconds(5)), HGETALL("absent"))
            #expect(try again.get() == false)
            #expect(try fields.get().isEmpty)
            #expect(try await client.get("k").map { String(buffer: $0) } == "v")
        }
    }

    @Test func anErrorReplyFailsOnlyItsCommand() async throws {
        try await withRedis { _, client in
            _ = try await client.execute(SET("text", "v"))
            // LRANGE of a string: WRONGTYPE, for that command alone.
            let (range, time) = try await client.execute(LRANGE("text"), TIME())
            guard case .failure(let error as HiredisError) = range else {
                Issue.record("WRONGTYPE is the LRANGE's failure")
                return
            }
            #expect(error.serverCode == "WRONGTYPE")
            #expect((try? time.get()) != nil)
            // A raw command is a typed command whose response is the reply.
            #expect(try await client.execute(RESPCommand("PING")) == .simpleString("PONG"))
        }
    }

    @Test func configGetAndSetOnEachPrimary() async throws {
        try await withRedis { _, client in
            for primary in try await client.primaries() {
                try await client.execute(CONFIG_SET("notify-keyspace-events", "Kx"), toPrimary: primary)
                let flags = try await client.execute(CONFIG_GET("notify-keyspace-events"), toPrimary: primary)
                #expect(flags.map(Set.init) == Set("Kx"))
                #expect(try await client.execute(CONFIG_GET("no-such-parameter"), toPrimary: primary) == nil)
            }
        }
    }

    @Test func waitCountsReplicasOfTheConnectionsWrites() async throws {
        try await withRedis { _, client in
            let (set, acknowledged) = try await client.execute(SET("k", "v"), WAIT(replicas: 0, timeout: .milliseconds(10)))
            #expect(try set.get() && acknowledged.get() == 0, "a server without replicas acknowledges with none")
        }
    }

    /// A primary that lost a library (a restart without persistence, FUNCTION FLUSH) gets it
    /// again and only the calls it refused are sent again: the calls other primaries ran, ran
    /// once. (Re-sending the whole pipeline ran them twice.)
    @Test func aPipelineReSendsOnlyTheCallsThatWereNotFound() async throws {
        let library = try LuaLibrary(
            source: "#!lua name=typed_test\nredis.register_function('bump', function(keys) return redis.call('INCR', keys[1]) end)\n")
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            _ = try await client.sendToEveryPrimary(library.loadCommand)
            let primaries = try await cluster.primaries()
            _ = try await cluster.send(RESPCommand("FUNCTION", "FLUSH"), to: primaries[0])
            let keys = (0..<60).map { "counter-\($0)" }
            let calls = keys.map { RESPCommand("FCALL", "bump", 1, .string($0)) } + [RESPCommand("TIME")]
            let replies = try await client.pipeline(calls, loading: library, timeout: .seconds(5))
            #expect(replies.dropLast().allSatisfy { $0.int == 1 }, "every call ran, once")
            #expect(replies.last?.array?.count == 2)
            for key in keys { #expect(try await client.get(key).map { String(buffer: $0) } == "1", "\(key) ran once") }
        }
    }

    /// Callers that find a function missing together share one load of its library (each sent
    /// the whole library to every primary).
    @Test func concurrentCallersShareOneReload() async throws {
        let library = try LuaLibrary(
            source: "#!lua name=typed_reload\nredis.register_function('one', function() return 1 end)\n")
        try await withRedis { _, client in
            _ = try await client.send(library.loadCommand)
            _ = try await client.send(RESPCommand("FUNCTION", "FLUSH"))
            _ = try await client.send(RESPCommand("CONFIG", "RESETSTAT"))
            let results = try await withThrowingTaskGroup(of: RESPReply.self) { group in
                for _ in 0..<100 { group.addTask { try await client.call("one", in: library, keys: [], arguments: []) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(results.count == 100 && results.allSatisfy { $0.int == 1 })
            let stats = RedisInfo(try await client.send(RESPCommand("INFO", "commandstats")).string ?? "").fields
            let loads = stats["cmdstat_function|load"].flatMap { $0.split(separator: ",").first }.flatMap {
                Int($0.dropFirst("calls=".count))
            }
            #expect((loads ?? 0) >= 1 && (loads ?? 0) <= 5, "one load for a burst of callers, not one each (\(loads ?? 0))")
        }
    }
}
