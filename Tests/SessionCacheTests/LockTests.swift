@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import TestSupport
import Testing

@Suite("Session locks against a real redis-server")
struct LockTests {
    @Test(arguments: Deployment.everywhere) func threeStoresTimesEightTabsLoseNoIncrement(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let session = try await fixture.store.create(user: "alice", mode: .lenient)
            let stores = try (0..<3).map { _ in try fixture.secondStore(fixture.store.configuration) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (_, store) in stores {
                    let locks = SessionLock.started(store: store)
                    for _ in 0..<8 {
                        group.addTask {
                            for _ in 0..<100 {
                                // What is tested is that no increment is lost, not how long 23
                                // waiters ahead take on a busy host.
                                try await locks.withLock(session.id, timeout: .seconds(60)) { lease in
                                    let value = try await counter(store, session.id)
                                    try await store.setMetadata(session.id, key: "counter", value: .number(value + 1), lease: lease)
                                }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await counter(fixture.store, session.id) == 2400)
            for (client, _) in stores { await client.close() }
        }
    }

    @Test func threeProcessesTimesEightTabsTimesFiveHundredLoseNoIncrement() async throws {
        try await withStore { fixture in
            let session = try await fixture.store.create(user: "alice", mode: .lenient)
            let arguments = ["lock-increment", "\(fixture.server.port)", "test", session.id, "8", "500"]
            let workers = try await withThrowingTaskGroup(of: ChildProcess.self) { group in
                for _ in 0..<3 { group.addTask { try await startWorker(arguments, waitFor: "ready") } }
                var workers: [ChildProcess] = []
                for try await worker in group { workers.append(worker) }
                return workers
            }
            for worker in workers {
                #expect(await worker.waitForExit(timeout: .seconds(180)))
                #expect(worker.exitCode == 0)
            }
            #expect(try await counter(fixture.store, session.id) == 12_000)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func aHolderPastItsLeaseCannotWriteAndTheNewHoldersDataIsIntact(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment) { fixture in
            var configuration = SessionLockConfiguration()
            configuration.lease = .milliseconds(300)
            let locks = SessionLock.started(store: fixture.store, configuration: configuration)
            let session = try await fixture.store.create(user: "alice")
            let old = try await locks.acquire(session.id)  // no renewal: acquire without withLock
            try await Task.sleep(for: .milliseconds(400))  // the lease runs out
            let new = try await locks.acquire(session.id, timeout: .seconds(2))
            #expect(new.fence > old.fence)
            try await fixture.store.setMetadata(session.id, key: "owner", value: "new", lease: new)
            let error = await expectSessionError { try await fixture.store.setMetadata(session.id, key: "owner", value: "old", lease: old) }
            #expect(error == .staleLease)
            #expect(
                await expectSessionError {
                    try await fixture.store.appendMessage(session.id, SessionMessage(role: "user", content: "x"), lease: old)
                }
                    == .staleLease)
            #expect(await expectSessionError { try await fixture.store.clearMessages(session.id, lease: old) } == .staleLease)
            #expect(try await fixture.store.metadata(session.id)["owner"] == "new")
            #expect(try await locks.release(old) == false, "a release by a non-owner is refused")
            #expect(try await locks.release(new))
            #expect(try await locks.release(new) == false, "a second release changes nothing")
        }
    }

    @Test func aKilledHoldersLockPassesToAWaiterWithinTheLease() async throws {
        try await withStore { fixture in
            let session = try await fixture.store.create(user: "alice")
            let holder = try await startWorker(["lock-hold", "\(fixture.server.port)", "test", session.id, "1000"], waitFor: "held")
            let locks = SessionLock.started(store: fixture.store)
            let waiting = Task { try await locks.acquire(session.id, timeout: .seconds(10)) }
            try await Task.sleep(for: .milliseconds(100))
            let killed = ContinuousClock.now
            holder.send(SIGKILL)
            let lease = try await waiting.value
            #expect(killed.elapsed < .milliseconds(1500), "got the lock within the holder's lease")
            #expect(try await locks.release(lease))
        }
    }

    @Test(arguments: Deployment.everywhere) func waitTimeoutCancellationAndActiveTabWins(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let locks = SessionLock.started(store: fixture.store)
            let session = try await fixture.store.create(user: "alice")
            let holder = try await locks.acquire(session.id)

            let start = ContinuousClock.now
            await #expect(throws: LockError.timedOut) { _ = try await locks.acquire(session.id, timeout: .milliseconds(300)) }
            #expect(start.elapsed < .seconds(2))

            let cancelled = Task { try await locks.acquire(session.id, timeout: .seconds(30)) }
            try await Task.sleep(for: .milliseconds(100))
            cancelled.cancel()
            let outcome = await cancelled.result
            #expect(throws: CancellationError.self) { try outcome.get() }

            // The timed-out and cancelled waiters left the queue: the next one gets the lock at once.
            try await locks.release(holder)
            let next = try await locks.acquire(session.id, timeout: .seconds(1))
            try await locks.release(next)

            // Active tab wins: the newer tab takes over at once; the older tab's writes are refused.
            let activeTab = SessionLock.started(store: fixture.store, configuration: SessionLockConfiguration(policy: .activeTabWins))
            let older = try await activeTab.acquire(session.id)
            let newer = try await activeTab.acquire(session.id, timeout: .milliseconds(50))
            #expect(newer.fence > older.fence)
            #expect(
                await expectSessionError { try await fixture.store.setMetadata(session.id, key: "k", value: 1, lease: older) }
                    == .staleLease)
            try await fixture.store.setMetadata(session.id, key: "k", value: 2, lease: newer)
            #expect(try await activeTab.extend(older) == false, "the older tab learns it lost the lock")

            #expect(await #expect(throws: LockError.self) { _ = try await locks.acquire(String(repeating: "Z", count: 43)) } != nil)
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func perTabLocksDoNotRefuseEachOthersWrites(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let locks = SessionLock.started(store: fixture.store, configuration: SessionLockConfiguration(policy: .sessionPerTab))
            let session = try await fixture.store.create(user: "alice")
            let tabA = try await locks.acquire(session.id, tab: "a")
            // Tabs never wait for each other (waiting for tab A would take its 5 s lease).
            let tabB = try await locks.acquire(session.id, tab: "b", timeout: .seconds(1))
            #expect(tabB.fence > tabA.fence)
            // Tab A's lease is valid: its write goes through although tab B acquired later.
            try await fixture.store.setMetadata(session.id, key: "a", value: 1, lease: tabA)
            try await fixture.store.setMetadata(session.id, key: "b", value: 2, lease: tabB)
            #expect(try await fixture.store.metadata(session.id) == ["a": 1, "b": 2])
            // The same tab twice does wait.
            await #expect(throws: LockError.timedOut) { _ = try await locks.acquire(session.id, tab: "a", timeout: .milliseconds(200)) }
            await #expect(throws: LockError.invalidTab) { _ = try await locks.acquire(session.id, tab: "x:queue") }
            let releasedA = try await locks.release(tabA)
            let releasedB = try await locks.release(tabB)
            #expect(releasedA && releasedB)
        }
    }

    @Test func anAcquireThatTimesOutAfterRedisGrantedItLeavesNoGhostHolder() async throws {
        try await withStore { fixture in
            var redis = fixture.server.configuration
            redis.commandTimeout = .milliseconds(300)
            let (slowClient, slowStore) = try { () throws -> (HiredisClient, SessionStore) in
                let client = try HiredisClient.started(configuration: redis)
                return (client, try SessionStore(client: client, configuration: fixture.store.configuration))
            }()
            let session = try await fixture.store.create(user: "alice")
            _ = try await slowStore.get(session.id)  // connected
            var configuration = SessionLockConfiguration()
            configuration.lease = .seconds(30)
            let locks = SessionLock.started(store: slowStore, configuration: configuration)
            // Redis is frozen: the acquire's commands wait in its socket and run after the client gave up.
            fixture.server.pause()
            await #expect(throws: LockError.self) { _ = try await locks.acquire(session.id) }
            fixture.server.resume()
            // The lock is free at once, not after the 30 s lease of a grant nobody received.
            let others = SessionLock.started(store: fixture.store)
            let lease = try await others.acquire(session.id, timeout: .seconds(3))
            #expect(try await others.release(lease))
            await slowClient.close()
        }
    }

    @Test func aRenewalThatMeetsAShortStallKeepsTheLease() async throws {
        try await withStore { fixture in
            var redis = fixture.server.configuration
            redis.commandTimeout = .milliseconds(400)
            let client = try HiredisClient.started(configuration: redis)
            let store = try SessionStore(client: client, configuration: fixture.store.configuration)
            var configuration = SessionLockConfiguration()
            configuration.lease = .seconds(3)
            let locks = SessionLock.started(store: store, configuration: configuration)
            let session = try await store.create(user: "alice")
            // Redis stalls for 1.5 s while the body works: renewals time out, but the lease (3 s) never
            // ran out, so the body keeps it and its write goes through.
            try await locks.withLock(session.id) { lease in
                try await Task.sleep(for: .milliseconds(900))
                fixture.server.pause()
                try await Task.sleep(for: .milliseconds(1500))
                fixture.server.resume()
                try await Task.sleep(for: .milliseconds(900))
                try await store.setMetadata(session.id, key: "kept", value: true, lease: lease)
            }
            #expect(try await store.metadata(session.id)["kept"] == true)
            await client.close()
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func waitersDoNotSpin(_ deployment: Deployment) async throws {
        try await withStore(on: deployment) { fixture in
            let locks = SessionLock.started(store: fixture.store)
            let session = try await fixture.store.create(user: "alice")
            let holder = try await locks.acquire(session.id)
            // Counted on every primary (on a cluster a keyless command goes to any one of them).
            _ = try await fixture.client.sendToEveryPrimary(RESPCommand("CONFIG", "RESETSTAT"))
            await #expect(throws: LockError.timedOut) { _ = try await locks.acquire(session.id, timeout: .milliseconds(1500)) }
            var calls = 0
            for reply in try await fixture.client.sendToEveryPrimary(RESPCommand("INFO", "commandstats")) {
                calls += RedisInfo(reply.string ?? "").commandStatistics["fcall"]?.calls ?? 0
            }
            // A heartbeat every 500 ms (plus the abandon and a release): a handful of calls, not hundreds.
            #expect(calls <= 8, "\(calls) function calls while waiting 1.5 s")
            try await locks.release(holder)
        }
    }

    @Test func fencingTokensGrowAcrossARestartThatLostTheLastSecond() async throws {
        try await withStore(.init(notifyKeyspaceEvents: "Ex", appendOnly: true)) { fixture in
            let locks = SessionLock.started(store: fixture.store)
            let session = try await fixture.store.create(user: "alice")
            try await Task.sleep(for: .milliseconds(1100))  // the session is on disk; what follows may not be
            var last = 0
            for _ in 0..<20 {
                let lease = try await locks.acquire(session.id)
                last = max(last, lease.fence)
                try await locks.release(lease)
            }
            await fixture.server.kill()  // appendfsync everysec: the last grants are lost
            try await fixture.server.restart()
            let after = try await locks.acquire(session.id, timeout: .seconds(5))
            #expect(after.fence > last, "a fence after the restart (\(after.fence)) repeats or precedes one before (\(last))")
        }
    }

    @Test func fencingTokensGrowAcrossAFailoverToAReplicaThatLagged() async throws {
        try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex")) { primary in
            try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex", arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])) {
                replica in
                let primaryClient = try HiredisClient.started(configuration: primary.configuration)
                let store = try SessionStore(client: primaryClient, configuration: testConfiguration())
                let session = try await store.create(user: "alice")
                // Wait until the replica has the session, then freeze it: it lags from here on.
                let replicaClient = try HiredisClient.started(configuration: replica.configuration)
                for _ in 0..<100 {
                    if try await replicaClient.send(RESPCommand("EXISTS", .string(store.keyspace.session(session.id)))).int == 1 { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                replica.pause()
                let locks = SessionLock.started(store: store)
                var last = 0
                for _ in 0..<20 {
                    let lease = try await locks.acquire(session.id)
                    last = max(last, lease.fence)
                    try await locks.release(lease)
                }
                // The primary dies; the lagging replica is promoted.
                await primary.kill()
                replica.resume()
                _ = try await replicaClient.send(RESPCommand("REPLICAOF", "NO", "ONE"))
                let promoted = try SessionStore(client: replicaClient, configuration: testConfiguration())
                let after = try await SessionLock.started(store: promoted).acquire(session.id, timeout: .seconds(5))
                #expect(after.fence > last, "a fence after the failover (\(after.fence)) repeats or precedes one before (\(last))")
                await primaryClient.close()
                await replicaClient.close()
            }
        }
    }

    /// The promoted replica's clock is an hour behind (the ClockSkew shim): with replica
    /// acknowledgement it knows the session's last token, and the next one is larger still (a
    /// fence from its clock alone would go back an hour).
    @Test func fencingTokensStrictlyIncreaseAcrossAFailoverToAReplicaWithASlowerClock() async throws {
        let shim = clockSkewShimPath
        try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex")) { primary in
            var options = RedisServer.Options(notifyKeyspaceEvents: "Ex", arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])
            options.environment = ["LD_PRELOAD": shim, "CLOCK_SKEW_MS": "-3600000"]
            try await RedisServer.with(options) { replica in
                let primaryClient = try HiredisClient.started(configuration: primary.configuration)
                let replicaClient = try HiredisClient.started(configuration: replica.configuration)
                var synced = false
                for _ in 0..<100 where !synced {
                    synced = try await primaryClient.send(RESPCommand("WAIT", 1, 100)).int == 1
                }
                try #require(synced)
                let skew =
                    try await primaryClient.execute(TIME()).totalMicroseconds - (try await replicaClient.execute(TIME()).totalMicroseconds)
                #expect(skew > 3_000_000_000, "the replica's clock is behind by \(skew) µs")

                var configuration = testConfiguration()
                configuration.replicaAcknowledgement = .init(replicas: 1, timeout: .seconds(2))
                let store = try SessionStore(client: primaryClient, configuration: configuration)
                let session = try await store.create(user: "alice")
                let locks = SessionLock.started(store: store)
                var fences: [Int] = []
                for tab in [nil, "a", nil, "b", nil] {
                    let lease = try await locks.acquire(session.id, tab: tab)
                    fences.append(lease.fence)
                    try await locks.release(lease)
                }
                #expect(fences == fences.sorted() && Set(fences).count == fences.count, "tokens on one server strictly increase")

                // The primary dies; the replica, which confirmed every grant, is promoted.
                await primary.kill()
                _ = try await replicaClient.send(RESPCommand("REPLICAOF", "NO", "ONE"))
                let promoted = try SessionStore(client: replicaClient, configuration: testConfiguration())
                let after = try await SessionLock.started(store: promoted).acquire(session.id, timeout: .seconds(5))
                #expect(
                    after.fence > fences.last ?? .max,
                    "a fence after the failover (\(after.fence)) precedes one before (\(fences.last ?? 0))")
                await primaryClient.close()
                await replicaClient.close()
            }
        }
    }

    @Test(arguments: Deployment.standaloneAndCluster) func withLockReleasesOnThrowAndTellsAHolderThatLostItsLease(
        _ deployment: Deployment
    ) async throws {
        try await withStore(on: deployment) { fixture in
            var configuration = SessionLockConfiguration()
            // Long enough that a busy host's scheduling delays (150 ms and more seen on CI) do
            // not end it between two renewals; the body outlasts it twice over.
            configuration.lease = .seconds(1)
            let locks = SessionLock.started(store: fixture.store, configuration: configuration)
            let session = try await fixture.store.create(user: "alice")
            struct Boom: Error {}
            await #expect(throws: Boom.self) { try await locks.withLock(session.id) { _ in throw Boom() } }
            let free = try await locks.acquire(session.id, timeout: .milliseconds(500))  // released on throw (the lease is 1 s)
            try await locks.release(free)

            // A long body keeps its lease through renewals.
            try await locks.withLock(session.id) { lease in
                try await Task.sleep(for: .milliseconds(2500))
                try await fixture.store.setMetadata(session.id, key: "k", value: 1, lease: lease)
            }
            // Another tab takes the lock over while a body works: the body is told.
            let takeover = SessionLock.started(store: fixture.store, configuration: SessionLockConfiguration(policy: .activeTabWins))
            await #expect(throws: LockError.leaseLost) {
                try await locks.withLock(session.id) { _ in
                    _ = try await takeover.acquire(session.id)
                    try await Task.sleep(for: .seconds(5))
                }
            }
        }
    }

    @Test func redisKilledAndRestartedWhileLocksAreHeldAndAwaited() async throws {
        try await withStore(.init(notifyKeyspaceEvents: "Ex", appendOnly: true)) { fixture in
            var configuration = SessionLockConfiguration()
            configuration.waitTimeout = .seconds(3)
            let locks = SessionLock.started(store: fixture.store, configuration: configuration)
            let session = try await fixture.store.create(user: "alice")
            try await Task.sleep(for: .milliseconds(1100))  // on disk (appendfsync everysec)
            let holder = try await locks.acquire(session.id)
            let waiters = (0..<4).map { _ in Task { try await locks.acquire(session.id) } }
            try await Task.sleep(for: .milliseconds(100))
            let start = ContinuousClock.now
            await fixture.server.kill()
            try await fixture.server.restart()
            for waiter in waiters {
                if let lease = try? await waiter.value { _ = try? await locks.release(lease) }
            }
            #expect(start.elapsed < .seconds(8), "nobody hangs beyond the wait timeout")
            _ = try? await locks.release(holder)
            // Usable afterwards.
            let value = try await locks.withLock(session.id, timeout: .seconds(10)) { lease in
                try await fixture.store.setMetadata(session.id, key: "after", value: true, lease: lease)
                return 1
            }
            #expect(value == 1)
        }
    }
}
