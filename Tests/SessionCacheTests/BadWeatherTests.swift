@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import TestSupport
import Testing

/// A child process's output, line by line, awaited with a timeout.
final class LineFeed: Sendable {
    private struct State {
        var lines: [String] = []
        var consumed = 0
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = NIOLockedValueBox(State())

    @Sendable func receive(_ line: String) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.lines.append(line)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The next line starting with `prefix` (earlier lines are skipped), split at spaces; nil after `timeout`.
    func next(_ prefix: String, timeout: Duration) async -> [Substring]? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let found = state.withLockedValue { state -> String? in
                while state.consumed < state.lines.count {
                    let line = state.lines[state.consumed]
                    state.consumed += 1
                    if line.hasPrefix(prefix) { return line }
                }
                return nil
            }
            if let found { return found.split(separator: " ") }
            // Wait for the next line, at most 50 ms (then look again and check the deadline).
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let ready = self.state.withLockedValue { state -> Bool in
                            if state.consumed < state.lines.count { return true }
                            state.waiter = continuation
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                }
                group.addTask { try? await Task.sleep(for: .milliseconds(50)) }
                await group.next()
                // Release a parked waiter so that the group can end.
                self.state.withLockedValue { state in
                    defer { state.waiter = nil }
                    return state.waiter
                }?.resume()
                await group.waitForAll()
            }
        }
        return nil
    }
}

/// Regression tests for what broke the first store in bad weather: each names the defect it guards.
@Suite("The store in bad weather")
struct BadWeatherTests {
    /// App-server clocks never decide anything: an app server whose wall clock is an hour ahead
    /// or behind (a worker process run with the ClockSkew shim) creates, touches and expires
    /// sessions, and runs their hooks, exactly as one with a correct clock.
    @Test(arguments: [3_600_000, -3_600_000])
    func anAppServerWhoseClockIsOffByAnHourBehavesLikeACorrectOne(skew: Int) async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let shim = clockSkewShimPath
            let environment = ProcessInfo.processInfo.environment.merging(["LD_PRELOAD": shim, "CLOCK_SKEW_MS": "\(skew)"]) { $1 }
            let output = LineFeed()
            let process = try ChildProcess(
                executable: workerPath, arguments: ["clock-probe", "\(fixture.server.port)", "test", "\(fixture.keyspace.bucketCount)"],
                environment: environment, output: output.receive)
            defer { process.send(SIGKILL) }
            // The worker's clock really is off.
            guard let clock = await output.next("clock", timeout: .seconds(10)), let local = Int(clock[1]) else {
                Issue.record("the worker printed no clock")
                return
            }
            let measured = local - (try await fixture.redisNow())
            #expect(abs(measured - skew) < 60_000, "the worker's clock is off by \(measured) ms")

            guard let created = await output.next("created", timeout: .seconds(10)) else { return }
            let started = ContinuousClock.now
            let id = String(created[1])
            // Everything the store wrote is on Redis's clock.
            let createdAt = Int(try await fixture.field(id, "created_at") ?? "") ?? 0
            #expect(abs(createdAt - (try await fixture.redisNow())) < 5000)
            guard await output.next("touched", timeout: .seconds(10)) != nil else { return }
            let left = try await fixture.timerTTL(id)
            #expect((1200...1500).contains(left), "after the touch the timer has \(left) ms")
            // The hook comes when the session idled out (1.5 s after the touch), not an hour off.
            guard let hook = await output.next("hook", timeout: .seconds(10)) else { return }
            let after = started.elapsed
            #expect(hook[1] == Substring(id) && hook[2] == "idle_timeout")
            #expect(after > .milliseconds(1600) && after < .seconds(6), "hook after \(after)")
            let expiredAt = Int(hook[3]) ?? 0
            #expect(abs(expiredAt - (try await fixture.redisNow())) < 3000, "expiredAt is on Redis's clock")
            // The worker finalizes after its hook returned (in batches, within a sweep interval or
            // so): nothing may be left once it has.
            try? await pollUntil("the worker's finalize", timeout: .seconds(5)) { try await sessionKeys(fixture).isEmpty }
            let remaining = try await sessionKeys(fixture)
            #expect(remaining.isEmpty, "left after the hook: \(remaining)")
        }
    }

    @Test func rotatingASessionWithFiveThousandFieldsKeepsEveryOne() async throws {
        try await withStore(configure: {
            $0.limits.maxMetadataKeys = 6000
            $0.limits.maxSessionBytes = 4 * 1024 * 1024
        }) { fixture in
            let metadata = Dictionary(uniqueKeysWithValues: (0..<5000).map { ("field-\($0)", JSONValue.number(Double($0))) })
            let session = try await fixture.store.create(user: "alice", metadata: metadata)
            try await fixture.store.appendTurn(session.id, user: "q", assistant: "a")
            let rotated = try await fixture.store.rotate(session.id)
            #expect(try await fixture.store.get(session.id) == nil)
            #expect(try await fixture.store.metadata(rotated.id) == metadata)
            #expect(try await fixture.store.recentMessages(rotated.id).count == 2)
        }
    }

    @Test func rotationsWhileConnectionsAreKilledNeverLoseOrDuplicateASession() async throws {
        try await withStore { fixture in
            // The rotator's connections carry a name, so that only they are killed (killing every
            // other connection would also hit the fixture's second pooled connection, which the
            // checks below use).
            var rotatorConfiguration = fixture.client.configuration
            rotatorConfiguration.clientName = "rotator"
            let rotatorClient = try HiredisClient.started(configuration: rotatorConfiguration)
            let rotator = try SessionStore(client: rotatorClient, configuration: fixture.store.configuration)
            var users: [String] = []
            for index in 0..<100 {
                let user = "user-\(index)"
                _ = try await fixture.store.create(user: user, metadata: ["marker": .number(Double(index))])
                users.append(user)
            }
            let killer = Task {
                while !Task.isCancelled {
                    let clients = (try? await fixture.client.send(RESPCommand("CLIENT", "LIST", "TYPE", "normal")).string) ?? ""
                    let ids = clients.split(whereSeparator: \.isNewline).filter { $0.contains(" name=rotator ") }.compactMap {
                        $0.split(separator: " ").first { $0.hasPrefix("id=") }.map { String($0.dropFirst(3)) }
                    }
                    for id in ids { _ = try? await fixture.client.send(RESPCommand("CLIENT", "KILL", "ID", .string(id))) }
                    try? await Task.sleep(for: .milliseconds(2))
                }
            }
            var failures = 0
            for user in users {
                for _ in 0..<3 {
                    guard let current = try? await rotator.list(user: user).first?.id else { continue }
                    do { _ = try await rotator.rotate(current) } catch { failures += 1 }
                }
            }
            killer.cancel()
            _ = await killer.value
            // Whatever happened to each rotation, each user has exactly one live session with its data.
            for (index, user) in users.enumerated() {
                let sessions = try await fixture.store.list(user: user)
                #expect(sessions.count == 1, "\(user) has \(sessions.count) sessions")
                if let id = sessions.first?.id {
                    #expect(try await fixture.store.metadata(id)["marker"] == .number(Double(index)))
                }
            }
            #expect(failures > 0, "the connections were killed during rotations")
            await rotatorClient.close()
        }
    }

    @Test func logOutEverywhereRacingLoginsLeavesNoInvisibleSession() async throws {
        try await withStore { fixture in
            let (otherClient, other) = try fixture.secondStore(fixture.store.configuration)
            let created = NIOLockedValueBox<[String]>([])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        for _ in 0..<50 {
                            let session = try await fixture.store.create(user: "racer")
                            created.withLockedValue { $0.append(session.id) }
                        }
                    }
                }
                group.addTask {
                    for _ in 0..<30 {
                        _ = try await other.deleteAll(user: "racer")
                        try await Task.sleep(for: .milliseconds(2))
                    }
                }
                try await group.waitForAll()
            }
            // Every session is either ended or listed: "log out everywhere" can still reach it.
            let listed = Set(try await other.list(user: "racer", limit: 1000).map(\.id))
            for id in created.withLockedValue({ $0 }) {
                let alive = try await fixture.store.get(id) != nil
                #expect(!alive || listed.contains(id), "a live session is missing from the user's list")
            }
            #expect(try await other.deleteAll(user: "racer") == listed.count)
            for id in created.withLockedValue({ $0 }) { #expect(try await fixture.store.get(id) == nil) }
            await otherClient.close()
        }
    }

    @Test func aTouchWithAnOutdatedTimerNameCannotKeepTheOldTimeout() async throws {
        try await withStore { fixture in
            let (otherClient, other) = try fixture.secondStore(fixture.store.configuration)
            let session = try await fixture.store.create(user: "alice", mode: .lenient)
            try await fixture.store.touch(session.id)  // this instance knows the timer's name
            try await other.setTimeoutMode(session.id, .aggressive)  // another instance: 4 h → 5 min
            for _ in 0..<3 { try await fixture.store.touch(session.id) }
            let left = try await fixture.timerTTL(session.id)
            #expect(left <= 300_000, "a touch kept the 4-hour timeout: \(left) ms left")
            #expect(left > 290_000)
            await otherClient.close()
        }
    }

    @Test func eventsNeverCarryAWholeSessionID() async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let subscriber = HiredisSubscriber.started(configuration: fixture.server.configuration)
            try await subscriber.subscribe(channels: [fixture.keyspace.events])
            let store = fixture.store
            let session = try await store.create(user: "alice")
            _ = try await store.resume(session.id, user: "alice")
            let rotated = try await store.rotate(session.id)
            try await store.delete(rotated.id)
            var payloads: [String] = []
            var iterator = subscriber.events.makeAsyncIterator()
            while payloads.count < 4, case .message(_, _, let payload)? = await iterator.next() { payloads.append(String(buffer: payload)) }
            await subscriber.close()
            let events = payloads.compactMap(LifecycleEvent.init(json:))
            #expect(events.map(\.event) == [.created, .resumed, .rotated, .deleted])
            #expect(events[2].detail == String(rotated.id.prefix(9)))
            for payload in payloads {
                #expect(!payload.contains(session.id) && !payload.contains(rotated.id), "\(payload)")
            }
        }
    }

    /// While a slot migrates, Redis stops a function at the first key it reaches that is not on
    /// the node ("non local key") and keeps what the function wrote before. Here only the user's
    /// index has moved: an append ran its `RPUSH` and `HSET` on the old owner, then failed as
    /// "may have run" (a retry appended the message twice). Now the function answers `TRYAGAIN`
    /// having written nothing, and the call runs once, whole, on the new owner when the slot is
    /// handed over.
    @Test func aWriteOnAMigratingSlotChangesNothingThenRunsOnceWhole() async throws {
        try await RedisCluster.with { cluster in
            var configuration = cluster.configuration
            configuration.commandTimeout = .seconds(20)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            let store = try SessionStore(client: client, configuration: testConfiguration())
            let session = try await store.create(user: "alice")
            try await store.appendMessage(session.id, SessionMessage(role: "user", content: "first"))
            let keyspace = store.keyspace
            let slot = HashSlot.of(keyspace.session(session.id))
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            /// How many replies of `TRYAGAIN` the old owner has given.
            func refusals() async throws -> Int {
                let info = RedisInfo(try await cluster.send(RESPCommand("INFO", "errorstats"), to: source).string ?? "")
                return Int(info.fields["errorstat_TRYAGAIN"]?.split(separator: "=").last ?? "0") ?? 0
            }
            let refusedBefore = try await refusals()

            _ = try await cluster.beginMigration(ofSlot: slot, to: target, moving: [keyspace.userSessions("alice")])
            let append = Task { try await store.appendMessage(session.id, SessionMessage(role: "user", content: "second")) }
            try await pollUntil("the append to be refused on the old owner") { try await refusals() > refusedBefore }
            #expect(try await cluster.send(RESPCommand("LLEN", .string(keyspace.messages(session.id))), to: source).int == 1)
            let count = RESPCommand("HGET", .string(keyspace.session(session.id)), "message_count")
            #expect(try await cluster.send(count, to: source).string == "1")

            // The rest moves and the slot is handed over: the append runs there, once.
            try await cluster.finish(try await cluster.beginMigration(ofSlot: slot, to: target))
            try await append.value
            #expect(try await store.recentMessages(session.id).map(\.content) == ["first", "second"])
            #expect(try await store.get(session.id)?.messageCount == 2)
            #expect(try await store.list(user: "alice").map(\.id) == [session.id])
        }
    }

    /// The guard that makes writes wait out a migration reads a key of its own: it must lie in the
    /// namespace (an ACL of `~test:*` covers it) and must not need `CLUSTER` (an ACL without it
    /// leaves the guard on, harmless outside a cluster). Its first form read `{b}:migration-probe`
    /// and took any refusal for a migration: every write under such an ACL answered `TRYAGAIN`.
    @Test func writesWorkUnderAnACLOfTheNamespaceWithoutCLUSTER() async throws {
        try await RedisServer.with(.init(notifyKeyspaceEvents: nil)) { server in
            let admin = try HiredisClient.started(configuration: server.configuration)
            defer { Task { await admin.close() } }
            _ = try await admin.send(
                RESPCommand("ACL", "SETUSER", "app", "on", ">app-password", "~test:*", "&*", "+@all", "-cluster", "-config"))
            var redis = server.configuration
            redis.username = "app"
            redis.password = "app-password"
            redis.commandTimeout = .seconds(2)
            let client = try HiredisClient.started(configuration: redis)
            defer { Task { await client.close() } }
            let store = try SessionStore(client: client, configuration: testConfiguration())
            let session = try await store.create(user: "uma")
            try await store.appendMessage(session.id, SessionMessage(role: "user", content: "hello"))
            try await store.setMetadata(session.id, ["k": "v"])
            #expect(try await store.get(session.id)?.messageCount == 1)
            #expect(try await admin.send(RESPCommand("INFO", "errorstats")).string?.contains("TRYAGAIN") == false)
            // CLUSTER was asked once, not on every write.
            let statistics = try await admin.send(RESPCommand("INFO", "commandstats")).string ?? ""
            let keyslot = statistics.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_cluster|keyslot:") } ?? ""
            #expect(keyslot.contains("rejected_calls=1,"), "\(keyslot)")
        }
    }
}
