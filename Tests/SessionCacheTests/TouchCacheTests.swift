import EmbeddedRedis
import HiredisNIO
import SessionCache
import Testing

@Suite("The single-command touch")
struct TouchCacheTests {
    @Test func aCachedTouchStillRefusesSessionsDeletedOrExpiredElsewhere() async throws {
        try await withStore(configure: { $0.touchCacheLifetime = .seconds(30) }) { fixture in
            let (otherClient, other) = try fixture.secondStore(fixture.store.configuration)
            let session = try await fixture.store.create(user: "alice")
            try await fixture.store.touch(session.id)  // full script: fills the cache
            try await fixture.store.touch(session.id)  // one SET XX
            #expect(try await other.delete(session.id))
            #expect(await expectSessionError { try await fixture.store.touch(session.id) } == .notFound)
            #expect(try await fixture.allKeys().allSatisfy { !$0.contains(session.id) }, "a cached touch must not recreate the timer")

            let expiry = try await ExpiryWatch(fixture.server)
            let short = try await fixture.store.create(user: "alice", mode: .custom(.milliseconds(400)))
            try await fixture.store.touch(short.id)
            try await fixture.store.touch(short.id)
            #expect(try await expiry.wait(for: "test:session:{\(short.id)}:alive"))
            await expiry.close()
            #expect(await expectSessionError { try await fixture.store.touch(short.id) } == .notFound)
            #expect(try await fixture.pttl("test:session:{\(short.id)}:alive") == -2)
            await otherClient.close()
        }
    }

    @Test func aModeChangeOnAnotherInstanceReachesCachedTouchesWithinTheCacheLifetime() async throws {
        try await withStore(configure: { $0.touchCacheLifetime = .milliseconds(300) }) { fixture in
            let (otherClient, other) = try fixture.secondStore(fixture.store.configuration)
            let session = try await fixture.store.create(user: "alice", mode: .standard)
            try await fixture.store.touch(session.id)
            try await other.setTimeoutMode(session.id, .aggressive)
            try await Task.sleep(for: .milliseconds(350))  // the documented staleness bound
            try await fixture.store.touch(session.id)
            #expect((290_000...300_000).contains(try await fixture.pttl("test:session:{\(session.id)}:alive")))
            await otherClient.close()
        }
    }

    @Test func touchesNearTheDeadlineAreCapped() async throws {
        try await withStore(configure: {
            $0.absoluteLifetime = .seconds(3); $0.touchCacheLifetime = .seconds(30)
        }) { fixture in
            let session = try await fixture.store.create(user: "alice", mode: .custom(.seconds(2)))
            try await fixture.store.touch(session.id)
            try await Task.sleep(for: .milliseconds(1200))  // now + idle passes the deadline
            try await fixture.store.touch(session.id)
            let ttl = try await fixture.pttl("test:session:{\(session.id)}:alive")
            #expect(ttl <= 1800, "the timer never runs past the absolute deadline (\(ttl) ms left)")
        }
    }
}
