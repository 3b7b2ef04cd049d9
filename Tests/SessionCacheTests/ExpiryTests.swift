import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import Testing

@Suite("Expiry hooks against a real redis-server")
struct ExpiryTests {
    static func grace(_ configuration: inout SessionStoreConfiguration) { configuration.expiryGrace = .seconds(30) }

    @Test func threeListenersRunEachHookExactlyOnceWithTheSessionsData() async throws {
        try await withStore(configure: Self.grace) { fixture in
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
            #expect(try await fixture.client.send(RESPCommand("ZCARD", "test:deadlines")) == .integer(0))
            #expect(try await fixture.store.count(user: "user-1") == 0)
            #expect(try await fixture.store.stats().endedSessions == count)
        }
    }

    @Test func hooksFireWhenTheSubscribersConnectionIsKilled() async throws {
        try await withStore(configure: Self.grace) { fixture in
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

    @Test func hooksFireThroughTheSweepWhenNotificationsAreOffAndCONFIGIsRefused() async throws {
        // A managed Redis: no notifications, CONFIG renamed away.
        try await withStore(.init(notifyKeyspaceEvents: nil, arguments: ["--rename-command", "CONFIG", ""]), configure: Self.grace) {
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

    @Test func hooksMissedWhileNoListenerRanFireWhenOneStarts() async throws {
        try await withStore(configure: Self.grace) { fixture in
            let expiry = try await ExpiryWatch(fixture.server)
            var timers: Set<String> = []
            for index in 0..<100 {
                let session = try await fixture.store.create(user: "u", mode: .custom(.milliseconds(300 + index * 2)))
                timers.insert("test:session:{\(session.id)}:alive")
            }
            #expect(try await expiry.wait(forAll: timers), "the sessions expired while nobody listened")
            await expiry.close()
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            #expect(await recorder.wait(forSessions: 100, timeout: .seconds(20)))
            await listener.stop()
            #expect(recorder.calls.values.allSatisfy { $0.count == 1 && $0[0].reason == .idleTimeout })
        }
    }

    @Test func aListenerKilledInTheMiddleOfAHookIsReplacedAfterTheLease() async throws {
        try await withStore(configure: Self.grace) { fixture in
            let worker = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
                "SessionTestWorker")
            let announcements = HiredisSubscriber(configuration: fixture.server.configuration)
            try await announcements.subscribe(channels: ["worker:hook-started"])
            let ready = NIOLockedValueBox(false)
            let process = try ChildProcess(
                executable: worker.path, arguments: ["expiry-hang", "\(fixture.server.port)", "test", "1500"]
            ) { line in if line == "ready" { ready.withLockedValue { $0 = true } } }

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

    @Test func warningsAbsoluteLifetimeAndDeleteHooks() async throws {
        try await withStore(configure: {
            $0.expiryGrace = .seconds(30)
            $0.expiryWarningLead = .milliseconds(400)
            $0.cleanupHooks = true
            $0.absoluteLifetime = .milliseconds(1200)
        }) { fixture in
            let recorder = HookRecorder()
            let warnings = NIOLockedValueBox<[String: Int]>([:])
            let listener = try RunningListener.start(
                fixture, onWarning: { warning in warnings.withLockedValue { $0[warning.session.id, default: 0] += 1 } },
                onExpiry: recorder.record)

            let idle = try await fixture.store.create(user: "idle", mode: .custom(.milliseconds(900)))
            let capped = try await fixture.store.create(user: "capped", mode: .custom(.seconds(10)))
            let deleted = try await fixture.store.create(user: "deleted", metadata: ["x": 1], mode: .custom(.seconds(10)))
            #expect(try await fixture.store.delete(deleted.id))
            #expect(try await fixture.store.get(deleted.id) == nil, "dead at once")
            #expect(await recorder.wait(forSessions: 3, timeout: .seconds(15)))
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

    @Test func aTouchRacingWithExpiryNeverBringsTheSessionBack() async throws {
        try await withStore(configure: Self.grace) { fixture in
            let recorder = HookRecorder()
            let listener = try RunningListener.start(fixture, onExpiry: recorder.record)
            var ids: [String] = []
            for _ in 0..<20 { ids.append(try await fixture.store.create(user: "u", mode: .custom(.milliseconds(250))).id) }
            // Touch them all as fast as possible while they expire and get cleaned up.
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
}
