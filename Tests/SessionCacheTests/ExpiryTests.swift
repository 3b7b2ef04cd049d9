@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import TestSupport
import Testing

@Suite("Expiry hooks against a real redis-server")
struct ExpiryTests {
    @Test(arguments: Deployment.everywhere) func threeListenersRunEachHookExactlyOnceWithTheSessionsData(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let listeners = try (0..<3).map { _ in try RunningListener.start(fixture, onExpiry: recorder.record) }
            let count = 2000
            let ids = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for index in 0..<count {
                    group.addTask {
                        // Due over about two seconds, starting late enough that creating 2,000 sessions
                        // on a loaded machine finishes first.
                        let mode = TimeoutMode.custom(.milliseconds(2500 + (index % 100) * 20))
                        let session = try await fixture.store.create(
                            user: "user-\(index % 40)", metadata: ["n": .number(Double(index))], mode: mode)
                        try await fixture.store.appendMessage(session.id, SessionMessage(role: "user", content: "message \(index)"))
                        return (index, session.id)
                    }
                }
                var ids: [Int: String] = [:]
                for try await (index, id) in group { ids[index] = id }
                return ids
            }
            #expect(await recorder.wait(forSessions: count, timeout: .seconds(30)))
            for listener in listeners { await listener.stop() }

            let calls = recorder.calls
            #expect(calls.count == count)
            #expect(calls.values.allSatisfy { $0.count == 1 }, "every hook exactly once")
            for (index, id) in ids {
                guard let expired = calls[id]?.first else { continue }
                #expect(expired.reason == .idleTimeout)
                #expect(expired.session.user == "user-\(index % 40)")
                #expect(expired.session.metadata["n"] == .number(Double(index)))
                #expect(expired.messages.map(\.content) == ["message \(index)"])
                #expect(expired.session.state == .expired)
            }
            #expect(try await sessionKeys(fixture).isEmpty, "no key is left behind")
            for bucket in 0..<fixture.keyspace.bucketCount {
                #expect(
                    try await fixture.client.send(RESPCommand("ZCARD", .string(fixture.keyspace.deadlines(bucket: bucket)))) == .integer(0))
            }
            #expect(try await fixture.store.count(user: "user-1") == 0)
            #expect(try await fixture.store.stats().endedSessions == count)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func listenersShareTheBucketsAndTakeOverWhenOneStops(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let first = try RunningListener.start(fixture, onExpiry: recorder.record)
            let second = try RunningListener.start(fixture, onExpiry: recorder.record)
            // Both registered: each sees two members.
            var members: [String] = []
            for _ in 0..<100 {
                members =
                    try await fixture.client.send(RESPCommand("ZRANGE", .string(fixture.keyspace.listeners), 0, -1)).array?.compactMap(
                        \.string) ?? []
                if members.count == 2 { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(members.count == 2)
            await first.stop()
            // The survivor's registry now lists only itself, and it ends every session in time.
            for index in 0..<100 { _ = try await fixture.store.create(user: "u\(index)", mode: .custom(.milliseconds(300))) }
            #expect(await recorder.wait(forSessions: 100, timeout: .seconds(15)))
            await second.stop()
            #expect(recorder.calls.values.allSatisfy { $0.count == 1 })
            #expect(try await fixture.client.send(RESPCommand("ZCARD", .string(fixture.keyspace.listeners))) == .integer(0))
        }
    }

    @Test(arguments: Deployment.everywhere) func hooksFireWhenTheSubscribersConnectionIsKilled(_ deployment: Deployment) async throws {
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            for index in 0..<200 {
                _ = try await fixture.store.create(user: "u", mode: .custom(.milliseconds(600 + index * 5)))
            }
            _ = try await fixture.client.send(RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
            #expect(await recorder.wait(forSessions: 200, timeout: .seconds(20)))
            await listener.stop()
            #expect(recorder.calls.values.allSatisfy { $0.count == 1 })
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func hooksFireThroughTheSweepWhenNotificationsAreOffAndCONFIGIsRefused(
        _ deployment: Deployment
    ) async throws {
        // A managed Redis: no notifications, CONFIG renamed away.
        try await withStore(
            .init(notifyKeyspaceEvents: nil, arguments: ["--rename-command", "CONFIG", ""]), configure: listenerConfiguration
        ) {
            fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            for index in 0..<200 { _ = try await fixture.store.create(user: "u", mode: .custom(.milliseconds(500 + index * 5))) }
            #expect(await recorder.wait(forSessions: 200, timeout: .seconds(20)))
            await listener.stop()
            #expect(recorder.calls.count == 200 && recorder.calls.values.allSatisfy { $0.count == 1 })
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func hooksMissedWhileNoListenerRanFireWithTheDataWhenOneStartsLongAfter(
        _ deployment: Deployment
    ) async throws {
        // All listeners down for far longer than the old 60-second grace would allow (here: the
        // data outlives the idle timer by the safety TTL only), and the hooks still run with data.
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let expiry = try await ExpiryWatch(fixture)
            var timers: Set<String> = []
            var ids: [String] = []
            for index in 0..<100 {
                let session = try await fixture.store.create(
                    user: "u", metadata: ["i": .number(Double(index))], mode: .custom(.milliseconds(300 + index * 2)))
                timers.insert(try await fixture.timer(session.id) ?? "")
                ids.append(session.id)
            }
            #expect(try await expiry.wait(forAll: timers), "the sessions expired while nobody listened")
            await expiry.close()
            // The data is kept until a hook claimed it: its TTL reaches past the absolute deadline.
            for id in ids { #expect(try await fixture.pttl(fixture.keyspace.session(id)) > 24 * 3600 * 1000) }
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            #expect(await recorder.wait(forSessions: 100, timeout: .seconds(20)))
            await listener.stop()
            #expect(
                recorder.calls.values.allSatisfy { $0.count == 1 && $0[0].reason == .idleTimeout && $0[0].session.metadata["i"] != nil })
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    @Test func aRedisPausedLongerThanTheIdleTimeoutLosesNoHook() async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            var listenerConfiguration = fastListener()
            listenerConfiguration.claimLease = .seconds(5)
            let listener = try RunningListener.start(fixture, configuration: listenerConfiguration, onExpiry: recorder.record)
            var ids: [String] = []
            for index in 0..<50 {
                ids.append(
                    try await fixture.store.create(user: "u\(index)", metadata: ["i": .number(Double(index))], mode: .custom(.seconds(1)))
                        .id)
            }
            // Frozen for three times the idle timeout: on waking, Redis's clock has moved on.
            fixture.server.pause()
            try await Task.sleep(for: .seconds(3))
            fixture.server.resume()
            #expect(await recorder.wait(forSessions: 50, timeout: .seconds(20)))
            await listener.stop()
            let calls = recorder.calls
            for id in ids {
                #expect(calls[id]?.count == 1, "hook ran \(calls[id]?.count ?? 0) times")
                #expect(calls[id]?.first?.session.metadata["i"] != nil, "with the session's data")
            }
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    @Test func aListenerKilledInTheMiddleOfAHookIsReplacedAfterTheLease() async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let worker = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
                "SessionTestWorker")
            let announcements = HiredisSubscriber.started(configuration: fixture.server.configuration)
            try await announcements.subscribe(channels: ["worker:hook-started"])
            let process = try ChildProcess(
                executable: worker.path,
                arguments: ["expiry-hang", "\(fixture.server.port)", "test", "1500", "\(fixture.keyspace.bucketCount)"]
            ) { _ in }

            let session = try await fixture.store.create(user: "alice", metadata: ["sandbox": "sb-1"], mode: .custom(.milliseconds(300)))
            var events = announcements.events.makeAsyncIterator()
            guard case .message(_, _, let payload)? = await events.next() else {
                Issue.record("the worker's hook never started")
                return
            }
            #expect(String(buffer: payload) == session.id)
            process.send(SIGKILL)
            await process.waitForExit(timeout: .seconds(10))
            await announcements.close()

            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            #expect(await recorder.wait(forSessions: 1, timeout: .seconds(15)))
            await listener.stop()
            let runs = recorder.calls[session.id] ?? []
            #expect(runs.count == 1)
            #expect(runs.first?.attempt == 1, "the second run knows it is a second run")
            #expect(runs.first?.session.metadata["sandbox"] == "sb-1")
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func warningsAbsoluteLifetimeAndDeleteHooks(_ deployment: Deployment) async throws {
        try await withStore(
            on: deployment,
            configure: {
                $0.expiryListener = true
                $0.expiryWarningLead = .milliseconds(400)
                $0.absoluteLifetimes.custom = .milliseconds(1200)
            }
        ) { fixture in
            let recorder = HookRecorder()
            let warnings = NIOLockedValueBox<[String: Int]>([:])
            let listener = try RunningListener.start(
                fixture, onWarning: { warning in warnings.withLockedValue { $0[warning.session.id, default: 0] += 1 } },
                onExpiry: recorder.record)

            let idle = try await fixture.store.create(user: "idle", mode: .custom(.milliseconds(900)))
            let capped = try await fixture.store.create(user: "capped", mode: .custom(.seconds(1)))
            let deleted = try await fixture.store.create(user: "deleted", metadata: ["x": 1], mode: .custom(.seconds(1)))
            #expect(try await fixture.store.delete(deleted.id))
            #expect(try await fixture.store.get(deleted.id) == nil, "dead at once")
            // Keep `capped` active until its absolute lifetime ends it.
            let keeper = Task {
                while (try? await fixture.store.touch(capped.id)) != nil { try? await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(await recorder.wait(forSessions: 3, timeout: .seconds(15)))
            await keeper.value
            await listener.stop()

            let calls = recorder.calls
            #expect(calls[idle.id]?.map(\.reason) == [.idleTimeout])
            #expect(calls[capped.id]?.map(\.reason) == [.absoluteLifetime])
            #expect(calls[deleted.id]?.map(\.reason) == [.deleted])
            #expect(calls[deleted.id]?.first?.session.metadata["x"] == 1)
            let warned = warnings.withLockedValue { $0 }
            #expect(warned[idle.id] == 1, "one warning before the idle expiry")
            #expect(warned[capped.id] == nil, "no idle warning for a session ended by its absolute lifetime")
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    /// With 4 buckets and a 20 ms sweep, the listener is "busy" above 4 claims per sweep
    /// (200 per second): it then stops receiving keyspace notifications, which could not make any
    /// visit sooner, and takes them again when the load has passed. Every hook still runs once.
    /// (On a cluster the subscription is one per primary: notifications are node-local.)
    @Test(arguments: Deployment.standaloneAndCluster) func aListenerBusierThanItsBucketsPausesItsNotificationsAndResumesThemAfter(
        _ deployment: Deployment
    ) async throws {
        try await withStore(
            on: deployment,
            configure: {
                $0.expiryListener = true
                $0.bucketCount = 4
            }
        ) { fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            let patterns = { try await fixture.client.sendToEveryPrimary(RESPCommand("PUBSUB", "NUMPAT")) }
            let patternSubscriptions = { try await patterns().allSatisfy { $0 == .integer(1) } }
            try await pollUntil("the listener's subscription", timeout: .seconds(10)) { try await patternSubscriptions() }
            // 1,200 sessions ending within ~1.5 s of their creation by 8 writers: several hundred
            // claims per second, above the bound even on a slow host.
            try await withThrowingTaskGroup(of: Void.self) { writers in
                for writer in 0..<8 {
                    writers.addTask {
                        for index in stride(from: writer, to: 1200, by: 8) {
                            _ = try await fixture.store.create(user: "u\(index % 50)", mode: .custom(.milliseconds(500 + index)))
                        }
                    }
                }
                try await writers.waitForAll()
            }
            try await pollUntil("notifications paused while busy", timeout: .seconds(10)) {
                try await patterns().allSatisfy { $0 == .integer(0) }
            }
            #expect(await recorder.wait(forSessions: 1200, timeout: .seconds(30)))
            try await pollUntil("notifications resumed", timeout: .seconds(10)) { try await patternSubscriptions() }
            await listener.stop()
            #expect(recorder.calls.values.allSatisfy { $0.count == 1 })
            #expect(try await sessionKeys(fixture).isEmpty)
        }
    }

    /// A hook that hangs is cancelled at ``ExpiryListenerConfiguration/hookTimeout`` on each try,
    /// other sessions' hooks run meanwhile, and the session is finalized after the last try.
    @Test func aHungHookIsCancelledAtItsTimeoutWhileOtherHooksRun() async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let cancellations = NIOLockedValueBox(0)
            var configuration = fastListener()
            configuration.hookTimeout = .milliseconds(300)
            configuration.maxHookAttempts = 2
            let listener = try RunningListener.start(fixture, configuration: configuration) { expired in
                if expired.session.metadata["hang"] == true {
                    do {
                        try await Task.sleep(for: .seconds(120))
                    } catch {
                        cancellations.withLockedValue { $0 += 1 }
                        throw error
                    }
                }
                recorder.record(expired)
            }
            let hung = try await fixture.store.create(user: "alice", metadata: ["hang": true])
            let started = ContinuousClock.now
            #expect(try await fixture.store.delete(hung.id))
            for _ in 0..<5 {
                let other = try await fixture.store.create(user: "bob")
                #expect(try await fixture.store.delete(other.id))
            }
            #expect(await recorder.wait(forSessions: 5, timeout: .seconds(15)), "the other hooks run while one hangs")
            // Two tries of 300 ms (and the pause between them), not the 120 s the hook would take.
            try await pollUntil("the hung session's finalize", timeout: .seconds(15)) {
                try await sessionKeys(fixture).isEmpty
            }
            #expect(started.elapsed < .seconds(15))
            #expect(cancellations.withLockedValue { $0 } == 2, "each try was cancelled at its timeout")
            #expect(recorder.calls[hung.id] == nil)
            await listener.stop()
        }
    }

    /// A hook that ignores its cancellation must not hold its slot for ever: with one hook slot,
    /// the other sessions' hooks run once the stubborn one is abandoned (timeout + stop grace),
    /// and its session is finalized with no second try.
    @Test func aHookThatIgnoresCancellationIsAbandonedAndFreesItsSlot() async throws {
        try await withStore(configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let stubbornRuns = NIOLockedValueBox(0)
            let parked = NIOLockedValueBox<[CheckedContinuation<Void, Never>]>([])
            var configuration = fastListener()
            configuration.maxConcurrentHooks = 1
            configuration.hookTimeout = .milliseconds(300)
            configuration.hookStopGrace = .milliseconds(300)
            configuration.maxHookAttempts = 3
            let listener = try RunningListener.start(fixture, configuration: configuration) { expired in
                if expired.session.metadata["stubborn"] == true {
                    stubbornRuns.withLockedValue { $0 += 1 }
                    // Waits for something cancellation does not end.
                    await withCheckedContinuation { continuation in parked.withLockedValue { $0.append(continuation) } }
                }
                recorder.record(expired)
            }
            let stubborn = try await fixture.store.create(user: "alice", metadata: ["stubborn": true])
            #expect(try await fixture.store.delete(stubborn.id))
            try await pollUntil("the stubborn hook started", timeout: .seconds(10)) { stubbornRuns.withLockedValue { $0 } == 1 }
            for _ in 0..<3 {
                let other = try await fixture.store.create(user: "bob")
                #expect(try await fixture.store.delete(other.id))
            }
            #expect(await recorder.wait(forSessions: 3, timeout: .seconds(15)), "the other hooks run once the slot is free")
            try await pollUntil("the stubborn session's finalize", timeout: .seconds(15)) { try await sessionKeys(fixture).isEmpty }
            #expect(stubbornRuns.withLockedValue { $0 } == 1, "an abandoned hook is not tried again (it may still run)")
            await listener.stop()
            for continuation in parked.withLockedValue({ $0 }) { continuation.resume() }
        }
    }

    /// The reason must not depend on a sweep visit while the session lived: no listener runs
    /// until it has ended, touched up to its absolute lifetime (it failed when only a visit in the
    /// last idle period recorded the activity).
    @Test func aSessionActiveUntilItsAbsoluteLifetimeEndsByItWithNoListenerWatching() async throws {
        try await withStore(configure: {
            $0.expiryListener = true
            $0.absoluteLifetimes.custom = .milliseconds(1200)
        }) { fixture in
            let capped = try await fixture.store.create(user: "capped", mode: .custom(.seconds(1)))
            while (try? await fixture.store.touch(capped.id)) != nil { try await Task.sleep(for: .milliseconds(100)) }
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            #expect(await recorder.wait(forSessions: 1, timeout: .seconds(15)))
            await listener.stop()
            #expect(recorder.calls[capped.id]?.map(\.reason) == [.absoluteLifetime])
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func shorteningTheModeMovesTheHookAndWarningToTheNewDeadline(
        _ deployment: Deployment
    ) async throws {
        try await withStore(
            on: deployment,
            configure: {
                // A window of 1.5 s for the warning: a busy CI host delayed a sweep visit past a
                // 500 ms one (the visit then found the session ended, and warned of nothing).
                $0.expiryListener = true; $0.expiryWarningLead = .milliseconds(1500)
            }
        ) { fixture in
            let recorder = HookRecorder()
            let warnings = NIOLockedValueBox<[String: Int]>([:])
            let listener = try RunningListener.start(
                fixture, onWarning: { warning in warnings.withLockedValue { $0[warning.session.id, default: 0] += 1 } },
                onExpiry: recorder.record)
            // lenient (4 hours) → 3 s: the hook comes at the new expiry, not hours later.
            let session = try await fixture.store.create(user: "alice", mode: .lenient)
            let changed = ContinuousClock.now
            try await fixture.store.setTimeoutMode(session.id, .custom(.seconds(3)))
            #expect(await recorder.wait(forSessions: 1, timeout: .seconds(12)))
            let took = changed.elapsed
            await listener.stop()
            #expect(took >= .milliseconds(2900) && took < .seconds(6), "hook after \(took)")
            #expect(recorder.calls[session.id]?.first?.reason == .idleTimeout)
            #expect(warnings.withLockedValue { $0[session.id] } == 1, "the warning came before the new deadline")
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func aDeleteWhoseConnectionDropsEitherHappensWithItsHookOrNotAtAll(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            var ids: [String] = []
            for index in 0..<200 { ids.append(try await fixture.store.create(user: "u\(index % 20)", mode: .lenient).id) }
            // Delete them all while every normal client connection keeps being killed.
            let killer = Task {
                while !Task.isCancelled {
                    _ = try? await fixture.client.send(RESPCommand("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
                    try? await Task.sleep(for: .milliseconds(3))
                }
            }
            let (deleterClient, deleter) = try fixture.secondStore(fixture.store.configuration)
            var failed: [String] = []
            for id in ids {
                do { _ = try await deleter.delete(id) } catch { failed.append(id) }
            }
            killer.cancel()
            _ = await killer.value
            // Whatever failed is retried; a delete that did happen reports "not found" now. (The
            // killer's last round may have closed a deleter connection whose close the client has
            // not seen yet: such a retry fails as lost and is tried again.)
            for id in failed {
                for attempt in 1...5 {
                    do {
                        _ = try await deleter.delete(id)
                        break
                    } catch SessionError.redis(let error) where error.code == .connectionLost && attempt < 5 {
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
            }
            #expect(await recorder.wait(forSessions: ids.count, timeout: .seconds(20)))
            await listener.stop()
            #expect(recorder.calls.count == ids.count, "every deleted session's hook ran")
            for (id, runs) in recorder.calls where runs.count != 1 || runs[0].reason != .deleted {
                Issue.record("session \(id.prefix(9)): \(runs.map { "\($0.reason) attempt \($0.attempt)" })")
            }
            #expect(try await sessionKeys(fixture).isEmpty)
            await deleterClient.close()
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func aTouchRacingWithExpiryNeverBringsTheSessionBack(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment, configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            var ids: [String] = []
            for _ in 0..<20 { ids.append(try await fixture.store.create(user: "u", mode: .custom(.milliseconds(250))).id) }
            // Heartbeats (which do not extend) as fast as possible while the sessions end and are finalized.
            let touchers = ids.map { id in
                Task {
                    var refused = 0
                    for _ in 0..<400 {
                        do { try await fixture.store.touch(id, activity: .heartbeat) } catch { refused += 1 }
                    }
                    return refused
                }
            }
            #expect(await recorder.wait(forSessions: 20, timeout: .seconds(15)))
            for toucher in touchers { _ = await toucher.value }
            await listener.stop()
            for id in ids {
                #expect(await expectSessionError { try await fixture.store.touch(id) } == .notFound)
                #expect(try await fixture.store.resume(id, user: "u") == .notFound)
            }
            #expect(recorder.calls.values.allSatisfy { $0.count == 1 })
            #expect(try await sessionKeys(fixture).isEmpty, "nothing was recreated")
        }
    }

    /// Managed Redis refuses CONFIG, and its operator sets the flags in the server's own
    /// configuration (as the Deployment article says): the listener subscribes all the same, and a
    /// hook starts on the notification. (It used to rely on the sweep alone there.)
    @Test func whereConfigIsRefusedTheListenerSubscribesAnyway() async throws {
        try await RedisServer.with(.init(notifyKeyspaceEvents: "Kx")) { server in
            let admin = try HiredisClient.started(configuration: server.configuration)
            _ = try await admin.send(RESPCommand("ACL", "SETUSER", "app", "on", ">app-password", "~*", "&*", "+@all", "-config"))
            var redis = server.configuration
            redis.username = "app"
            redis.password = "app-password"
            let client = try HiredisClient.started(configuration: redis)
            var configuration = testConfiguration()
            configuration.expiryListener = true
            let store = try SessionStore(client: client, configuration: configuration)
            var listenerConfiguration = ExpiryListenerConfiguration()
            // No full sweep within the test's time after the first: a session created after it is
            // found through its notification only.
            listenerConfiguration.fullSweepInterval = .seconds(120)
            let (ended, endedContinuation) = AsyncStream.makeStream(of: String.self)
            let listener = ExpiryListener(store: store, configuration: listenerConfiguration) { expired in
                endedContinuation.yield(expired.session.id)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await listener.run() }
                var subscribed = false
                for _ in 0..<100 where !subscribed {
                    subscribed = try await admin.send(RESPCommand("PUBSUB", "NUMPAT")).int ?? 0 > 0
                    if !subscribed { try await Task.sleep(for: .milliseconds(50)) }
                }
                #expect(subscribed, "the listener subscribed to the timers' notifications")
                let session = try await store.create(user: "ivy", mode: .custom(.milliseconds(300)))
                let first = await withTaskGroup(of: String?.self) { race in
                    race.addTask {
                        var iterator = ended.makeAsyncIterator()
                        return await iterator.next()
                    }
                    race.addTask {
                        try? await Task.sleep(for: .seconds(20))
                        return nil
                    }
                    let first = await race.next() ?? nil
                    race.cancelAll()
                    return first
                }
                #expect(first == session.id)
                group.cancelAll()
            }
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func aListenerNeedsAStoreInListenerMode(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let listener = ExpiryListener(store: fixture.store) { _ in }
            await #expect(throws: SessionError.self) { try await listener.run() }
        }
    }
}
