import EmbeddedRedis
import HiredisNIO
import Hummingbird
import HummingbirdSessionCache
import Testing

/// The behaviours of Hummingbird's own persist tests, on a real redis-server, plus what its Redis
/// drivers get wrong (millisecond precision, KEEPTTL, errors not swallowed).
@Suite("HiredisPersistDriver")
struct PersistDriverTests {
    func withDriver(_ body: (HiredisPersistDriver, RedisServer) async throws -> Void) async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                try await body(HiredisPersistDriver(client: client), server)
            }
        }
    }

    @Test func setGetCreateDuplicateSetTwiceRemove() async throws {
        try await withDriver { persist, _ in
            try await persist.set(key: "a", value: "Persist", expires: nil)
            #expect(try await persist.get(key: "a", as: String.self) == "Persist")
            try await persist.set(key: "a", value: "again", expires: nil)
            #expect(try await persist.get(key: "a", as: String.self) == "again")

            try await persist.create(key: "b", value: ["x": 1], expires: nil)
            await #expect(throws: PersistError.duplicate) { try await persist.create(key: "b", value: ["x": 2], expires: nil) }
            #expect(try await persist.get(key: "b", as: [String: Int].self) == ["x": 1])

            try await persist.remove(key: "b")
            #expect(try await persist.get(key: "b", as: [String: Int].self) == nil)
            // A value that is not of the asked type: a typed error, not a silent nil.
            await #expect(throws: PersistError.invalidConversion) { _ = try await persist.get(key: "a", as: [String: Int].self) }
        }
    }

    @Test func expiriesAreMillisecondsAndSetWithoutOneKeepsTheTTL() async throws {
        try await withDriver { persist, _ in
            try await persist.set(key: "short", value: 1, expires: .milliseconds(1500))
            let first = try #require(try await persist.getWithTTL(key: "short", as: Int.self))
            #expect(first.object == 1)
            // Millisecond precision: not rounded to whole seconds.
            let ttl = try #require(first.ttl)
            #expect(ttl > .milliseconds(1000) && ttl <= .milliseconds(1500))
            // No expiry given: the current one stays (KEEPTTL).
            try await persist.set(key: "short", value: 2, expires: nil)
            let second = try #require(try await persist.getWithTTL(key: "short", as: Int.self))
            #expect(second.object == 2 && (second.ttl ?? .zero) > .zero && (second.ttl ?? .zero) <= ttl)
            // Without any expiry: none.
            try await persist.set(key: "forever", value: 3, expires: nil)
            #expect(try await persist.getWithTTL(key: "forever", as: Int.self)?.ttl == nil)
            // Expired values are gone (Redis expires the key: nothing to sleep past here).
            try await persist.create(key: "instant", value: 4, expires: .milliseconds(1))
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await persist.get(key: "instant", as: Int.self) == nil)
        }
    }

    @Test func aRedisOutageIsAnErrorNotAMissingValue() async throws {
        try await withDriver { persist, server in
            try await persist.set(key: "k", value: "v", expires: nil)
            await server.kill()
            await #expect(throws: HiredisError.self) { _ = try await persist.get(key: "k", as: String.self) }
        }
    }
}
