import EmbeddedRedis
import HiredisNIO
import Testing

@testable import SessionCache

/// One account with very many sessions must not freeze Redis for everyone: measured with
/// 200,000 sessions of one user, `delete_user` held Redis 4.25 s in one call and `list … 50`
/// 0.99 s (the index of sessions that ended by themselves was never pruned).
@Suite("A user with very many sessions")
struct LargeUserTests {
    /// Creates `count` sessions of `user` at once (concurrently, for speed).
    private static func createMany(_ count: Int, user: String, mode: TimeoutMode? = nil, in store: SessionStore) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for start in stride(from: 0, to: count, by: 250) {
                group.addTask {
                    for _ in start..<min(start + 250, count) { _ = try await store.create(user: user, mode: mode) }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Commands of this run that took Redis longer than `microseconds` (SLOWLOG).
    private static func slowCalls(_ client: HiredisClient, over microseconds: Int) async throws -> [String] {
        let entries = try await client.send(RESPCommand("SLOWLOG", "GET", "100")).array ?? []
        return entries.compactMap { entry in
            guard let parts = entry.array, parts.count > 3, let took = parts[2].int, took > microseconds else { return nil }
            let command = (parts[3].array ?? []).prefix(2).compactMap(\.string).joined(separator: " ")
            return "\(command): \(took) µs"
        }
    }

    @Test func logOutEverywhereAndListAreBoundedPerCall() async throws {
        try await withStore(configure: { $0.limits.maxSessionsPerUser = nil }) { fixture in
            let store = fixture.store
            try await Self.createMany(10_000, user: "many", in: store)
            // 50 ms: far above a bounded call (about 2 ms for 100 sessions or a list of 1,000 entries
            // on a quiet machine), far below one call over 10,000 (about 200 ms).
            _ = try await fixture.client.send(RESPCommand("CONFIG", "SET", "slowlog-log-slower-than", "50000"))
            _ = try await fixture.client.send(RESPCommand("SLOWLOG", "RESET"))
            #expect(try await store.list(user: "many", limit: 50).count == 50)
            #expect(try await store.count(user: "many", limit: 100_000) == store.configuration.limits.maxListScan)
            #expect(try await store.deleteAll(user: "many") == 10_000)
            #expect(try await store.list(user: "many").isEmpty)
            #expect(try await fixture.client.send(RESPCommand("EXISTS", .string(fixture.keyspace.userSessions("many")))) == .integer(0))
            let slow = try await Self.slowCalls(fixture.client, over: 50_000)
            #expect(slow.isEmpty, "\(slow)")
        }
    }

    /// Sessions that ended by themselves (no listener) left their index entries forever: a list
    /// walked all of them, stats counted them. Each create now prunes a few of the oldest.
    @Test func entriesOfEndedSessionsArePrunedAsTheyAreMet() async throws {
        try await withStore(configure: { $0.limits.maxSessionsPerUser = nil }) { fixture in
            let store = fixture.store
            let index = fixture.keyspace.userSessions("returning")
            try await Self.createMany(40, user: "returning", mode: .custom(.milliseconds(300)), in: store)
            // Wait until every timer is gone (each expires 300 ms after its creation).
            let deadline = ContinuousClock.now + .seconds(10)
            while try await store.list(user: "returning", limit: 100).count > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            // (Creates prune too: the later of the 40 may have pruned a few that ended first.)
            let stale = try await fixture.client.send(RESPCommand("ZCARD", .string(index))).int ?? 0
            #expect(stale > 20)
            // Each create prunes up to 4 ended entries from the old end.
            for _ in 0..<10 { _ = try await store.create(user: "returning") }
            #expect(try await fixture.client.send(RESPCommand("ZCARD", .string(index))) == .integer(10))
            #expect(try await store.count(user: "returning") == 10)
        }
    }

    /// Past the cap, creating one more ends the user's least recently written session.
    @Test(arguments: [false, true]) func theCapEndsTheOldestSession(_ listener: Bool) async throws {
        try await withStore(
            configure: {
                $0.limits.maxSessionsPerUser = 3
                $0.expiryListener = listener
            }
        ) { fixture in
            let store = fixture.store
            // The index orders by the millisecond of the last write (Redis's clock): each write
            // in a millisecond of its own.
            func nextMillisecond() async throws {
                func now() async throws -> Int {
                    let time = try await fixture.client.send(RESPCommand("TIME")).array ?? []
                    return (time.first?.int ?? 0) * 1000 + (time.last?.int ?? 0) / 1000
                }
                let start = try await now()
                while try await now() == start {}
            }
            var ids: [String] = []
            for _ in 0..<3 {
                try await nextMillisecond()
                ids.append(try await store.create(user: "capped").id)
            }
            // The first becomes the most recently written: the second is now the oldest.
            try await nextMillisecond()
            try await store.setMetadata(ids[0], key: "seen", value: true)
            try await nextMillisecond()
            let fourth = try await store.create(user: "capped")
            #expect(try await store.get(ids[1]) == nil, "the oldest ended")
            for id in [ids[0], ids[2], fourth.id] { #expect(try await store.get(id) != nil) }
            #expect(Set(try await store.list(user: "capped").map(\.id)) == [ids[0], ids[2], fourth.id])
            // Other users are not affected.
            for _ in 0..<5 { _ = try await store.create(user: "other") }
            #expect(try await store.count(user: "other") == 3)
        }
    }

    /// A log-in (bind) is one more session of the user: the cap applies as at create.
    @Test func theCapAppliesWhenAnAnonymousSessionIsBound() async throws {
        try await withStore(configure: { $0.limits.maxSessionsPerUser = 2 }) { fixture in
            let store = fixture.store
            let first = try await store.create(user: "capped")
            let second = try await store.create(user: "capped")
            let anonymous = try await store.createAnonymous()
            let bound = try await store.bind(anonymous.id, to: "capped")
            #expect(try await store.count(user: "capped") == 2, "the cap holds after a log-in")
            #expect(try await store.get(bound.id) != nil)
            var survivors = 0
            for id in [first.id, second.id] where try await store.get(id) != nil { survivors += 1 }
            #expect(survivors == 1, "one of the older sessions ended")
        }
    }

    @Test func hugeLimitsAreLoweredNotPassedToRedis() async throws {
        try await withStore { fixture in
            let store = fixture.store
            let session = try await store.create(user: "limits")
            try await store.appendMessage(session.id, SessionMessage(role: "user", content: "hi"))
            #expect(try await store.list(user: "limits", limit: .max).count == 1)
            #expect(try await store.count(user: "limits", limit: .max) == 1)
            #expect(try await store.recentMessages(session.id, limit: .max).count == 1)
        }
    }
}
