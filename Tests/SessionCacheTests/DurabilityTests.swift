@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import SessionCache
import Testing

@Suite("Replica acknowledgement (durability against a failover)")
struct DurabilityTests {
    @Test func acknowledgedWritesAreOnTheReplicaAndAStalledReplicaGivesATypedError() async throws {
        try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex")) { primary in
            try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex", arguments: ["--replicaof", "127.0.0.1", "\(primary.port)"])) {
                replica in
                let client = try HiredisClient.started(configuration: primary.configuration)
                let onReplica = try HiredisClient.started(configuration: replica.configuration)
                defer {
                    Task {
                        await client.close()
                        await onReplica.close()
                    }
                }
                // The replica is in sync before the test starts.
                var synced = false
                for _ in 0..<100 where !synced {
                    synced = try await client.send(RESPCommand("WAIT", 1, 100)).int == 1
                }
                try #require(synced)

                var configuration = testConfiguration()
                // Generous: a busy machine must not make a healthy replica look late.
                configuration.replicaAcknowledgement = .init(replicas: 1, timeout: .seconds(2))
                let store = try SessionStore(client: client, configuration: configuration)
                let locks = SessionLock.started(store: store)
                defer { Task { await locks.close() } }

                // Acknowledged means on the replica: read it there at once.
                let session = try await store.create(user: "alice")
                #expect(try await onReplica.send(RESPCommand("EXISTS", .string(store.keyspace.session(session.id)))).int == 1)
                let rotated = try await store.rotate(session.id)
                #expect(try await onReplica.send(RESPCommand("EXISTS", .string(store.keyspace.session(rotated.id)))).int == 1)
                let lease = try await locks.acquire(rotated.id)
                #expect(try await onReplica.get(store.keyspace.lock(rotated.id)).map { String(buffer: $0) } == lease.token)
                _ = try await locks.release(lease)

                // The replica stalls: the write happens on the primary, the caller is told it is not
                // safe against a failover.
                replica.pause()
                defer { replica.resume() }
                do {
                    _ = try await store.create(user: "bob")
                    Issue.record("create was acknowledged without the replica")
                } catch SessionError.notReplicated(let acknowledged, let required) {
                    #expect(acknowledged == 0 && required == 1)
                }
                // A lock that too few replicas confirm is given back, not held for a lease.
                await #expect(throws: LockError.notReplicated) { _ = try await locks.acquire(rotated.id) }
                #expect(try await client.get(store.keyspace.lock(rotated.id)) == nil)
                replica.resume()
            }
        }
    }
}

@Suite("Reads from cluster replicas")
struct ReplicaReadTests {
    @Test func readOnlyStoreCallsRunOnReplicasAndWritesOnPrimaries() async throws {
        try await withStore(on: .cluster) { fixture in
            let cluster = try #require(fixture.cluster)
            var configuration = cluster.configuration
            configuration.readFromReplicas = true
            let readerClient = try HiredisClient.started(configuration: configuration)
            defer { Task { await readerClient.close() } }
            let reader = try SessionStore(client: readerClient, configuration: testConfiguration())
            /// FCALL_RO calls served by the cluster's replicas.
            func replicaReads() async throws -> Int {
                var total = 0
                for node in cluster.nodes where node.pid != nil {
                    let info = RedisInfo(try await cluster.send(RESPCommand("INFO"), to: node).string ?? "")
                    guard info["role"] == "slave" else { continue }
                    let stats = RedisInfo(try await cluster.send(RESPCommand("INFO", "commandstats"), to: node).string ?? "")
                    total += stats.commandStatistics["fcall_ro"]?.calls ?? 0
                }
                return total
            }
            let before = try await replicaReads()
            let session = try await reader.create(user: "alice", metadata: ["plan": "pro"])
            // The replicas' connections come up in the background (the primary answers until
            // then), and replication is asynchronous: a replica has the session a moment later.
            let deadline = ContinuousClock.now + .seconds(10)
            var seen: Session?
            while true {
                seen = try await reader.get(session.id)
                if seen != nil, try await replicaReads() > before { break }
                try #require(ContinuousClock.now < deadline, "no read reached a replica")
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(seen?.metadata["plan"] == "pro")
            #expect(try await reader.list(user: "alice").map(\.id) == [session.id])
            // A write through the replica-reading client lands on the primary.
            try await reader.touch(session.id)
            #expect(try await fixture.store.get(session.id) != nil)
        }
    }
}
