@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOCore
import SessionCache
import TestSupport
import Testing

@Suite("Messages, metadata, users, limits")
struct DataTests {
    @Test(arguments: Deployment.standaloneAndCluster) func messagesKeepAWindowInRedisStampedWithRedisTime(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment, configure: { $0.messageWindow = 5 }) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice")
            for turn in 0..<6 { try await store.appendTurn(session.id, user: "question \(turn)", assistant: "answer \(turn)") }
            let messages = try await store.recentMessages(session.id, limit: 100)
            #expect(messages.map(\.content) == ["answer 3", "question 4", "answer 4", "question 5", "answer 5"])
            #expect(messages.map(\.role) == ["assistant", "user", "assistant", "user", "assistant"])
            #expect(try await store.recentMessages(session.id, limit: 2).map(\.content) == ["question 5", "answer 5"])
            let key = fixture.keyspace.messages(session.id)
            #expect(try await fixture.client.send(RESPCommand("LLEN", .string(key))) == .integer(5))
            // Plain for redis-cli: "<role> <unix ms> <content>", the time from Redis's clock.
            let raw = try await fixture.client.send(RESPCommand("LINDEX", .string(key), -1)).string ?? ""
            #expect(raw.hasPrefix("assistant ") && raw.hasSuffix(" answer 5"))
            let stamped = Int(raw.split(separator: " ")[1]) ?? 0
            #expect(abs(stamped - (try await fixture.redisNow())) < 5000)
            #expect(
                await expectSessionError { try await store.appendMessage(session.id, SessionMessage(role: "two words", content: "x")) }
                    == .invalidRole("two words"))
            // One call may append more than the window: the newest are kept.
            try await store.appendMessages(session.id, (0..<8).map { SessionMessage(role: "user", content: "burst \($0)") })
            #expect(try await store.recentMessages(session.id).map(\.content) == (3..<8).map { "burst \($0)" })
            let stored = try await store.get(session.id)
            #expect(stored?.messageCount == 20 && stored?.version == 8)

            try await store.clearMessages(session.id)
            #expect(try await store.recentMessages(session.id).isEmpty)
            #expect(try await store.get(session.id)?.messageCount == 0)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func metadataWritesOnlyTheChangedFields(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let (otherClient, other) = try fixture.secondStore(fixture.store.configuration)
            let session = try await fixture.store.create(user: "alice", metadata: ["theme": "dark"])
            // 2 stores × 50 tasks, each writing its own key at the same time: none is lost.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 {
                    let store = index.isMultiple(of: 2) ? fixture.store : other
                    group.addTask { try await store.setMetadata(session.id, key: "k\(index)", value: .number(Double(index))) }
                }
                try await group.waitForAll()
            }
            let metadata = try await other.metadata(session.id)
            #expect(metadata.count == 101)
            #expect(metadata["theme"] == "dark")
            #expect((0..<100).allSatisfy { metadata["k\($0)"] == .number(Double($0)) })

            try await fixture.store.setMetadata(session.id, ["theme": "light", "k1": nil])
            let after = try await fixture.store.metadata(session.id)
            #expect(after["theme"] == "light" && after["k1"] == nil && after.count == 100)
            #expect(try await fixture.field(session.id, "meta_count") == "100")
            await otherClient.close()
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func timeoutModesHaveTheirOwnAbsoluteLifetimes(_ deployment: Deployment) async throws
    {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice", mode: .aggressive)
            #expect(session.mode == .aggressive)
            #expect((299_000...300_000).contains(try await fixture.timerTTL(session.id)))
            try await store.setTimeoutMode(session.id, .persistent)
            let persistent = try await store.get(session.id)
            #expect(persistent?.mode == .persistent)
            // 24 h idle, not capped by a 12 h default: persistent conversations live up to 30 days.
            #expect((86_399_000...86_400_000).contains(try await fixture.timerTTL(session.id)))
            let lifetime = (persistent?.absoluteDeadline.timeIntervalSince(persistent?.createdAt ?? .distantPast)) ?? 0
            #expect(abs(lifetime - 30 * 24 * 3600) < 1)
            try await store.setTimeoutMode(session.id, .custom(.seconds(90)))
            #expect(try await store.get(session.id)?.mode == .custom(.seconds(90)))
            #expect((89_000...90_000).contains(try await fixture.timerTTL(session.id)))
            // A configuration whose absolute lifetime is shorter than the idle timeout is refused.
            var broken = testConfiguration()
            broken.absoluteLifetimes.persistent = .seconds(3600)
            #expect(throws: SessionError.self) { try SessionStore(client: fixture.client, configuration: broken) }
            var shortCustom = testConfiguration()
            shortCustom.absoluteLifetimes.custom = .seconds(10)
            let (otherClient, other) = try fixture.secondStore(shortCustom)
            let refused = await expectSessionError { _ = try await other.create(user: "alice", mode: .custom(.seconds(60))) }
            guard case .invalidConfiguration? = refused else {
                Issue.record("expected invalidConfiguration, got \(String(describing: refused))")
                return
            }
            await otherClient.close()
        }
    }

    /// An app's own metadata key named `timeout_mode` (the Vapor driver stores all session data as
    /// metadata) changed the session's lifetime: `custom:99999999999999` gave its keys TTLs of
    /// thousands of years. Metadata is now only metadata; custom modes are bounded.
    @Test(arguments: Deployment.standaloneAndCluster) func metadataNeverChangesTheLifetimeAndCustomModesAreBounded(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice", metadata: ["timeout_mode": "custom:99999999999999"])
            #expect(session.mode == .standard && session.metadata["timeout_mode"] == "custom:99999999999999")
            try await store.setMetadata(session.id, key: "timeout_mode", value: "custom:99999999999999")
            #expect(try await store.get(session.id)?.mode == .standard)
            #expect((1_799_000...1_800_000).contains(try await fixture.timerTTL(session.id)))
            for idle in [Duration.seconds(Int64.max), .seconds(31 * 24 * 3600), .microseconds(500), .zero, .seconds(-5)] {
                let refused = await expectSessionError { try await store.setTimeoutMode(session.id, .custom(idle)) }
                guard case .invalidTimeoutMode? = refused else {
                    Issue.record("\(idle): expected invalidTimeoutMode, got \(String(describing: refused))")
                    continue
                }
                let created = await expectSessionError { _ = try await store.create(user: "alice", mode: .custom(idle)) }
                guard case .invalidTimeoutMode? = created else {
                    Issue.record("\(idle): expected invalidTimeoutMode, got \(String(describing: created))")
                    continue
                }
            }
            #expect(try await store.get(session.id)?.mode == .standard, "a refused mode change wrote nothing")
            // The longest custom mode a configuration allows: its keys stay deletable.
            var wide = testConfiguration()
            wide.customIdleTimeouts = .seconds(1)...SessionStoreConfiguration.maximumLifetime
            wide.absoluteLifetimes.custom = SessionStoreConfiguration.maximumLifetime
            let (otherClient, other) = try fixture.secondStore(wide)
            let long = try await other.create(user: "bob", mode: .custom(SessionStoreConfiguration.maximumLifetime))
            #expect(try await other.get(long.id)?.mode == .custom(SessionStoreConfiguration.maximumLifetime))
            try await other.delete(long.id)
            #expect(try await other.get(long.id) == nil)
            await otherClient.close()
            // Configurations past the bounds are refused.
            var tooLong = testConfiguration()
            tooLong.absoluteLifetimes.persistent = .seconds(Int64.max)
            #expect(throws: SessionError.self) { try SessionStore(client: fixture.client, configuration: tooLong) }
        }
    }

    @Test(arguments: Deployment.everywhere) func usersListCountAndLogOutEverywhere(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let first = try await store.create(user: "alice", agentType: "sales")
            let second = try await store.create(user: "alice", agentType: "support")
            let third = try await store.create(user: "alice")
            _ = try await store.create(user: "bob")
            // The list orders by last write in Redis milliseconds: writes in one millisecond tie.
            try await Task.sleep(for: .milliseconds(5))
            try await store.appendMessage(first.id, SessionMessage(role: "user", content: String(repeating: "x", count: 300)))
            try await Task.sleep(for: .milliseconds(5))
            try await store.appendTurn(second.id, user: "hello", assistant: "Hi, how can I help?")

            let list = try await store.list(user: "alice")
            #expect(list.map(\.id) == [second.id, first.id, third.id])
            #expect(list[0].preview == "Hi, how can I help?" && list[0].agentType == "support")
            #expect(list[1].preview?.count == 60)
            // The hash stays in Redis's compact encoding.
            #expect(
                try await fixture.client.send(RESPCommand("OBJECT", "ENCODING", .string(fixture.keyspace.session(first.id)))).string
                    == "listpack")
            #expect(try await store.list(user: "alice", limit: 1).map(\.id) == [second.id])
            #expect(try await store.count(user: "alice") == 3)

            // A second instance sees the same sessions and index.
            let (otherClient, other) = try fixture.secondStore(store.configuration)
            #expect(try await other.list(user: "alice").map(\.id) == list.map(\.id))
            #expect(try await other.get(first.id)?.agentType == "sales")

            // An ended session is not listed.
            _ = try await fixture.client.send(RESPCommand("DEL", .string(try await fixture.timer(third.id) ?? "")))
            #expect(try await other.count(user: "alice") == 2)

            #expect(try await other.deleteAll(user: "alice") == 2)
            #expect(try await store.count(user: "alice") == 0)
            #expect(try await store.count(user: "bob") == 1)
            await otherClient.close()
        }
    }

    @Test(arguments: Deployment.everywhere) func everyKeyTheStoreWritesHasATTL(_ deployment: Deployment) async throws {
        for listener in [false, true] {
            try await withStore(
                on: deployment,
                configure: {
                    $0.expiryListener = listener; $0.expiryWarningLead = listener ? .seconds(1) : nil
                }
            ) { fixture in
                let store = fixture.store
                for user in ["u1", "u2"] {
                    let session = try await store.create(user: user, metadata: ["x": 1])
                    try await store.appendTurn(session.id, user: "a", assistant: "b")
                    try await store.touch(session.id)
                    try await store.touch(session.id, activity: .heartbeat)
                    try await store.setTimeoutMode(session.id, .aggressive)
                    _ = try await store.rotate(session.id)
                }
                let visitor = try await store.createAnonymous()
                _ = try await store.bind(visitor.id, to: "u4")
                let doomed = try await store.create(user: "u3")
                try await store.delete(doomed.id)
                _ = try await store.stats()
                let keys = try await fixture.allKeys()
                #expect(keys.count >= 8)
                for key in keys { #expect(try await fixture.pttl(key) > 0, "\(key) has no TTL (listener mode: \(listener))") }
            }
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func limitsAreTypedAndWriteNothing(_ deployment: Deployment) async throws {
        try await withStore(
            on: deployment,
            configure: {
                $0.limits.maxMetadataValueBytes = 100
                $0.limits.maxMessageBytes = 200
                $0.limits.maxSessionBytes = 600
                $0.limits.maxMetadataKeys = 10
                $0.messageWindow = 3
            }
        ) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice", metadata: ["a": "small"])
            let before = try await store.get(session.id)

            let bigValue = await expectSessionError {
                try await store.setMetadata(session.id, key: "big", value: .string(String(repeating: "v", count: 200)))
            }
            #expect(bigValue == .metadataValueTooLarge(key: "big", bytes: 202, limit: 100))
            let bigMessage = await expectSessionError {
                try await store.appendMessage(session.id, SessionMessage(role: "user", content: String(repeating: "m", count: 201)))
            }
            #expect(bigMessage == .messageTooLarge(bytes: 201, limit: 200))
            // Near the size limit with a full window: the next message still fits, because the size
            // is checked after the window drops the oldest one.
            for _ in 0..<3 {
                try await store.appendMessage(session.id, SessionMessage(role: "user", content: String(repeating: "m", count: 150)))
            }
            for _ in 0..<5 {
                try await store.appendMessage(session.id, SessionMessage(role: "user", content: String(repeating: "n", count: 150)))
            }
            #expect(
                try await store.recentMessages(session.id).map(\.content) == Array(repeating: String(repeating: "n", count: 150), count: 3))
            // Metadata past the size limit: refused, nothing written.
            let beforeOverflow = try await store.get(session.id)
            let tooBig = await expectSessionError {
                try await store.setMetadata(
                    session.id, ["b": .string(String(repeating: "b", count: 90)), "c": .string(String(repeating: "c", count: 90))])
            }
            guard case .sessionTooLarge? = tooBig else {
                Issue.record("expected sessionTooLarge, got \(String(describing: tooBig))")
                return
            }
            #expect(try await store.get(session.id)?.version == beforeOverflow?.version)

            // Too many keys, in one call or over several: typed, nothing written.
            let many = Dictionary(uniqueKeysWithValues: (0..<11).map { ("k\($0)", JSONValue.number(1)) })
            #expect(
                await expectSessionError { try await store.setMetadata(session.id, many) } == .tooManyMetadataKeys(count: 11, limit: 10))
            for index in 0..<9 { try await store.setMetadata(session.id, key: "k\(index)", value: 1) }
            #expect(
                await expectSessionError { try await store.setMetadata(session.id, key: "one-more", value: 1) }
                    == .tooManyMetadataKeys(count: 11, limit: 10))
            #expect(try await store.metadata(session.id).count == 10)

            #expect(await expectSessionError { try await store.touch("short") } == .invalidID)
            #expect(await expectSessionError { try await store.touch(String(repeating: "{", count: 27)) } == .invalidID)
            #expect(await expectSessionError { _ = try await store.create(user: "") } == .invalidUser)
            #expect(await expectSessionError { try await store.setMetadata(session.id, key: "", value: 1) } == .invalidMetadataKey(""))
            #expect(
                await expectSessionError { try await store.setMetadata(session.id, key: String(repeating: "k", count: 129), value: 1) }
                    == .invalidMetadataKey(String(repeating: "k", count: 129)))
            #expect(
                await expectSessionError { _ = try await store.create(user: "x", agentType: String(repeating: "a", count: 65)) }
                    == .invalidAgentType)
            #expect(before?.metadata["a"] == (try await store.get(session.id))?.metadata["a"])
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func tenThousandMetadataFieldsAreRefusedWithATypedError(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice", metadata: ["kept": true])
            let flood = Dictionary(uniqueKeysWithValues: (0..<10_000).map { ("field-\($0)", JSONValue.number(Double($0))) })
            #expect(
                await expectSessionError { try await store.setMetadata(session.id, flood) }
                    == .tooManyMetadataKeys(count: 10_000, limit: 256))
            #expect(
                await expectSessionError { _ = try await store.create(user: "alice", metadata: flood) }
                    == .tooManyMetadataKeys(count: 10_000, limit: 256))
            #expect(try await store.metadata(session.id) == ["kept": true])
            #expect(try await store.list(user: "alice").count == 1)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func aKeyOfTheWrongTypeGivesATypedError(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice")
            _ = try await fixture.client.send(RESPCommand("DEL", .string(fixture.keyspace.session(session.id))))
            _ = try await fixture.client.send(RESPCommand("SET", .string(fixture.keyspace.session(session.id)), "overwritten by hand"))
            for attempt in [
                { try await store.touch(session.id, activity: .heartbeat) },
                { _ = try await store.resume(session.id, user: "alice") },
                { _ = try await store.get(session.id) },
                { try await store.appendMessage(session.id, SessionMessage(role: "user", content: "x")) },
            ] as [@Sendable () async throws -> Void] {
                let error = await expectSessionError(attempt)
                guard case .corrupted? = error else {
                    Issue.record("expected corrupted, got \(String(describing: error))")
                    continue
                }
            }
            // The store keeps working for other sessions.
            let other = try await store.create(user: "alice")
            try await store.touch(other.id)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func statsCountSessionsUsersAndDurations(_ deployment: Deployment) async throws {
        for listener in [false, true] {
            try await withStore(on: deployment, configure: { $0.expiryListener = listener }) { fixture in
                let store = fixture.store
                for user in ["a", "a", "b", "c"] { _ = try await store.create(user: user) }
                let doomed = try await store.create(user: "c")
                try await Task.sleep(for: .milliseconds(50))
                try await store.delete(doomed.id)
                let stats = try await store.stats()
                // With a listener the deleted session awaits its hook (counted until finalized).
                #expect(stats.activeSessions == (listener ? 5 : 4) && stats.users == 3)
                #expect(stats.endedSessions == (listener ? 0 : 1))
                if !listener { #expect(stats.averageSessionDurationSeconds >= 0.05) }
                let json = try JSONEncoder().encode(stats)
                #expect(try JSONDecoder().decode(SessionStats.self, from: json) == stats)
            }
        }
    }

    @Test func sessionsSurviveARestartFromTheAppendOnlyFile() async throws {
        try await withStore(.init(notifyKeyspaceEvents: "Ex", appendOnly: true)) { fixture in
            let store = fixture.store
            let session = try await store.create(user: "alice", metadata: ["kept": true])
            try await store.appendTurn(session.id, user: "remember", assistant: "this")
            try await Task.sleep(for: .milliseconds(1200))  // the requirement: written more than a second before
            await fixture.server.kill()
            try await fixture.server.restart()
            guard case .resumed(let back, _) = try await store.resume(session.id, user: "alice") else {
                Issue.record("the session did not survive the restart")
                return
            }
            #expect(back.metadata["kept"] == true)
            #expect(try await store.recentMessages(session.id).map(\.content) == ["remember", "this"])
        }
    }

    @Test func aRedisThatIsDownGivesTypedErrorsAndTheStoreRecovers() async throws {
        try await RedisServer.with(.init(appendOnly: true)) { server in
            var redis = server.configuration
            redis.commandTimeout = .seconds(1)
            redis.connectTimeout = .seconds(1)
            let client = try HiredisClient.started(configuration: redis)
            let store = try SessionStore(client: client, configuration: testConfiguration())
            let session = try await store.create(user: "alice")
            try await Task.sleep(for: .milliseconds(1100))  // on disk (appendfsync everysec)

            await server.kill()
            let start = ContinuousClock.now
            for attempt in [
                { try await store.touch(session.id) },
                { _ = try await store.resume(session.id, user: "alice") },
                { _ = try await store.create(user: "bob") },
            ] as [@Sendable () async throws -> Void] {
                let error = await expectSessionError(attempt)
                guard case .redis? = error else {
                    Issue.record("expected a Redis error, got \(String(describing: error))")
                    continue
                }
            }
            #expect(start.elapsed < .seconds(10), "no hang beyond the timeouts")

            try await server.restart()
            guard case .resumed = try await store.resume(session.id, user: "alice") else {
                Issue.record("the store did not recover")
                return
            }
            await client.close()
        }
    }
}
