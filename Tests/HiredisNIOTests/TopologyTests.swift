@_spi(Testing) import EmbeddedRedis
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

@testable import HiredisNIO

@Suite("TLS (rediss://)")
struct TLSTests {
    @Test func mutualTLSWorksAndAWrongAuthorityIsRefusedTyped() async throws {
        let certificates = try await TLSCertificates.make()
        let stranger = try await TLSCertificates.make()
        defer {
            certificates.remove()
            stranger.remove()
        }
        try await RedisServer.with(.init(tls: certificates)) { server in
            // The URL form carries the files; verification is on by default.
            let client = try HiredisClient.started(configuration: HiredisConfiguration(url: server.url))
            try await client.set("greeting", to: "hello over TLS")
            #expect(try await client.get("greeting").map { String(buffer: $0) } == "hello over TLS")
            await client.close()

            // A server whose certificate does not chain to the trusted authority.
            var wrongAuthority = server.configuration
            wrongAuthority.tls = stranger.clientConfiguration
            wrongAuthority.connectTimeout = .seconds(2)
            let refused = try HiredisClient.started(configuration: wrongAuthority)
            let error = await expectRedisError { _ = try await refused.send(RESPCommand("PING")) }
            #expect(error?.code == .tlsFailure)
            #expect(error?.commandMayHaveRun == false)
            await refused.close()

            // No client certificate: the server (tls-auth-clients yes) refuses the handshake.
            var anonymous = server.configuration
            anonymous.tls = HiredisTLSConfiguration(caFile: certificates.caFile)
            anonymous.connectTimeout = .seconds(2)
            let noCertificate = try HiredisClient.started(configuration: anonymous)
            let anonymousError = await expectRedisError { _ = try await noCertificate.send(RESPCommand("PING")) }
            #expect(anonymousError != nil)
            await noCertificate.close()
        }
    }
}

@Suite("Redis Cluster")
struct ClusterTests {
    @Test func keysSpreadOverThePrimariesAndPipelinesKeepTheirOrder() async throws {
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            #expect(try await client.primaries().count == 3)
            let keys = (0..<300).map { "key-\($0)" }
            let replies = try await client.pipeline(keys.map { RESPCommand("SET", .string($0), .string("value of \($0)")) })
            #expect(replies.allSatisfy { $0.string == "OK" })
            // Every primary holds some of them.
            let sizes = try await client.sendToEveryPrimary(RESPCommand("DBSIZE")).compactMap(\.int)
            #expect(sizes.count == 3 && sizes.allSatisfy { $0 > 0 } && sizes.reduce(0, +) == 300)
            // SCAN over every node finds each of them once.
            #expect(try await client.scanKeys(matching: "key-*", count: 7).sorted() == keys.sorted())
            // A pipeline across nodes answers in the caller's order, keyless commands included.
            var mixed: [RESPCommand] = []
            for key in keys.reversed() { mixed += [RESPCommand("GET", .string(key)), RESPCommand("PING")] }
            let answers = try await client.pipeline(mixed)
            for (index, key) in keys.reversed().enumerated() {
                #expect(answers[2 * index].string == "value of \(key)")
                #expect(answers[2 * index + 1].string == "PONG")
            }
            // Keys of one hash tag go together (multi-key commands work within a slot).
            _ = try await client.send(RESPCommand("MSET", "{user}:a", "1", "{user}:b", "2"))
            #expect(try await client.send(RESPCommand("MGET", "{user}:a", "{user}:b")).array?.compactMap(\.string) == ["1", "2"])
        }
    }

    /// With `tls-cluster yes` (and on 7.2+ whenever both are configured) every node lists its
    /// `port` and its `tls-port` in `CLUSTER SHARDS`: a TLS client must use the TLS one. (It took
    /// `port` first and opened TLS to the plaintext port: every command failed.)
    @Test func aTLSClusterWhoseNodesListBothPortsIsReachedOverTLS() async throws {
        var options = RedisCluster.Options()
        options.replicasPerPrimary = 0
        options.node.tls = try await TLSCertificates.make()
        options.node.plaintextPortToo = true
        try await RedisCluster.with(options) { cluster in
            let shards = try await cluster.send(RESPCommand("CLUSTER", "SHARDS"), to: cluster.nodes[0])
            func mentions(_ word: String, in reply: RESPReply) -> Bool {
                if reply.string == word { return true }
                return reply.array?.contains { mentions(word, in: $0) } ?? false
            }
            #expect(mentions("tls-port", in: shards) && mentions("port", in: shards), "the nodes list both ports")
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            let keys = (0..<60).map { "tls-\($0)" }
            let replies = try await client.pipeline(keys.map { RESPCommand("SET", .string($0), "v") })
            #expect(replies.allSatisfy { $0.string == "OK" })
            #expect(Set(try await client.primaries()) == Set(cluster.nodes.map(\.address.description)))
        }
    }

    /// A write redirected by `MOVED` goes again with the `WAIT` that follows it: the `WAIT` must
    /// count the replicas of the node that ran the write. (Only the write went again; the `WAIT`'s
    /// reply came from the old owner, where nothing waited, and the write was reported
    /// replicated.) The new owner's replica is paused: the honest answer is 0.
    @Test func aRedirectedWriteTakesItsWAITAlong() async throws {
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            let key = "moving-key"
            let slot = HashSlot.of(key)
            try await client.set(key, to: "1")
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            // The slot moves behind the client's back: its map is stale.
            try await cluster.moveSlot(slot, to: target)
            let replica = try await cluster.replica(of: target)
            replica.pause()
            let replies = try await client.pipeline([RESPCommand("SET", .string(key), "2"), RESPCommand("WAIT", "1", "300")])
            replica.resume()
            #expect(replies[0].string == "OK")
            #expect(replies[1].int == 0, "the WAIT ran on the node that ran the write, whose replica was paused")
            #expect(try await cluster.send(RESPCommand("GET", .string(key)), to: target).string == "2")
        }
    }

    /// Split over nodes, `MULTI` stayed open on a shared connection (every later command on it
    /// answered `QUEUED`); now refused before anything is sent.
    @Test func aTransactionOverTwoSlotsIsRefusedAndLeavesNothingOpen() async throws {
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            let error = await expectRedisError {
                _ = try await client.transaction([RESPCommand("SET", "a", "1"), RESPCommand("SET", "b", "2")])
            }
            #expect(error?.code == .crossSlot && error?.commandMayHaveRun == false)
            for index in 0..<20 { try await client.set("after-\(index)", to: "v") }
            for index in 0..<20 { #expect(try await client.get("after-\(index)").map { String(buffer: $0) } == "v") }
            #expect(try await client.get("a") == nil)
            #expect(try await client.get("b") == nil)
            let results = try await client.transaction([RESPCommand("SET", "{t}:a", "1"), RESPCommand("INCR", "{t}:n")])
            #expect(results == [.simpleString("OK"), .integer(1)])
        }
    }

    /// A transaction refused because its slot moved (`MOVED` while queuing, `EXECABORT`) ran
    /// nowhere: it goes again, whole, to the new owner.
    @Test func aTransactionWhoseSlotMovedRunsWholeOnTheNewOwner() async throws {
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            try await client.set("{m}:a", to: "0")
            let slot = HashSlot.of("{m}:a")
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            try await cluster.moveSlot(slot, to: target)
            let results = try await client.transaction([RESPCommand("SET", "{m}:a", "1"), RESPCommand("INCR", "{m}:n")])
            #expect(results == [.simpleString("OK"), .integer(1)])
            #expect(try await cluster.send(RESPCommand("GET", "{m}:n"), to: target).string == "1", "ran once, on the new owner")
        }
    }

    @Test func movedAndAskAreFollowedWhileASlotMigrates() async throws {
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            let key = "migrating-key"
            let slot = HashSlot.of(key)
            try await client.set(key, to: "before")
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })

            // Keys already moved to the target: the source answers ASK, the client follows it.
            let migration = try await cluster.beginMigration(ofSlot: slot, to: target)
            #expect(try await client.get(key).map { String(buffer: $0) } == "before")
            try await client.set(key, to: "during")
            // The client's slot map is not updated by ASK: it still names the source.
            #expect(try await client.primary(forSlot: slot) == source.address.description)

            // Slot handed over: the next command gets MOVED and the client updates its map.
            try await cluster.finish(migration)
            #expect(try await client.get(key).map { String(buffer: $0) } == "during")
            #expect(try await client.primary(forSlot: slot) == target.address.description)
            try await client.set(key, to: "after")
            let onTarget = try await cluster.send(RESPCommand("GET", .string(key)), to: target)
            #expect(onTarget.string == "after")
        }
    }

    /// While a slot migrates its keys are split between the two nodes. A function whose first key
    /// has moved is answered `ASK`; followed, it ran on the importing node, which serves a read of
    /// a key it has not received yet as missing: the store's functions, which derive a bucket's
    /// other keys from their first, took live sessions for ended ones. A function waits for the
    /// slot instead (a passing refusal, retried) and runs where all its keys are.
    @Test func aFunctionWaitsForAHalfMigratedSlotRatherThanFollowASK() async throws {
        let library = try LuaLibrary(
            source: """
                #!lua name=peek_test
                redis.register_function('peek', function(keys) return redis.call('GET', keys[1] .. ':other') end)
                """)
        try await RedisCluster.with(.init(primaries: 3, replicasPerPrimary: 0)) { cluster in
            var configuration = cluster.configuration
            configuration.commandTimeout = .seconds(20)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            client.preload(library)
            let key = "{half}:first"
            let slot = HashSlot.of(key)
            try await client.set(key, to: "declared")
            try await client.set(key + ":other", to: "derived")
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })

            // Half migrated: the declared key is on the target, the derived one still on the source.
            _ = try await cluster.send(
                RESPCommand("CLUSTER", "SETSLOT", .integer(slot), "IMPORTING", .string(try await cluster.id(of: source))), to: target)
            _ = try await cluster.send(
                RESPCommand("CLUSTER", "SETSLOT", .integer(slot), "MIGRATING", .string(try await cluster.id(of: target))), to: source)
            _ = try await cluster.send(
                RESPCommand("MIGRATE", "127.0.0.1", .integer(target.port), .string(key), 0, 5000), to: source)

            let peek = Task { try await client.call("peek", in: library, keys: [.string(key)], arguments: []) }
            try await Task.sleep(for: .milliseconds(300))  // the call is refused and retried meanwhile
            try await cluster.moveSlot(slot, to: target)  // the rest moves; the slot is handed over
            #expect(try await peek.value.string == "derived", "run where both keys are")
        }
    }

    @Test func aKilledPrimaryIsReplacedByItsReplicaAndWritesResume() async throws {
        try await RedisCluster.with { cluster in
            var configuration = cluster.configuration
            configuration.commandTimeout = .seconds(10)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            let key = "survivor"
            // The write and a WAIT for the replica to have it, on the key's node (a keyless command
            // in a pipeline goes with the keyed one before it).
            let replies = try await client.pipeline([RESPCommand("SET", .string(key), "1"), RESPCommand("WAIT", "1", "2000")])
            #expect(replies[1].int == 1)
            let primary = try await cluster.primary(forSlot: HashSlot.of(key))
            let promoted = try await cluster.killPrimary(primary)
            // The client finds the new primary (CLUSTERDOWN/connection loss → refresh) within
            // its command timeout.
            #expect(try await client.get(key).map { String(buffer: $0) } == "1")
            try await client.set(key, to: "2")
            #expect(try await cluster.send(RESPCommand("GET", .string(key)), to: promoted).string == "2")
        }
    }

    /// A primary cut off from everyone (the client, its replicas, the other nodes) keeps running
    /// and answers nothing. Calls to its slots end within the command timeout with a typed error;
    /// once the others have failed it over, writes are served by the promoted replica while the
    /// old primary is still cut off; when the network is back it follows the new one, and every
    /// write acknowledged by a replica is there.
    @Test func aPartitionedPrimaryIsFailedOverAndNoAcknowledgedWriteIsLost() async throws {
        var options = RedisCluster.Options(primaries: 3, replicasPerPrimary: 2)
        options.partitionable = true
        try await RedisCluster.with(options) { cluster in
            var configuration = cluster.configuration
            configuration.commandTimeout = .seconds(2)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            let key = "partitioned"
            var (acknowledged, indeterminate) = (0, 0)
            for _ in 0..<20 { _ = try await client.send(RESPCommand("INCR", .string(key))) }
            // Both replicas have them, so whichever is promoted does.
            let copies = try await client.pipeline([RESPCommand("INCR", .string(key)), RESPCommand("WAIT", "2", "2000")])
            try #require(copies[1].int == 2)
            acknowledged = 21
            let primary = try await cluster.primary(forSlot: HashSlot.of(key))

            try cluster.partition(primary)
            let deadline = ContinuousClock.now + .seconds(30)
            var servedWhileCut = false
            while !servedWhileCut, ContinuousClock.now < deadline {
                let began = ContinuousClock.now
                do {
                    let replies = try await client.pipeline([
                        RESPCommand("INCR", .string(key)), RESPCommand("WAIT", "1", "500"),
                    ])
                    if replies[1].int == 1 {
                        acknowledged += 1
                        servedWhileCut = true
                    } else {
                        indeterminate += 1  // written on the promoted replica, not yet copied
                    }
                } catch let error as HiredisError {
                    indeterminate += 1
                    #expect([.timedOut, .connectionLost, .cannotConnect, .server].contains(error.code), "\(error)")
                }
                #expect(ContinuousClock.now - began < .milliseconds(2500), "a call outlived its command timeout")
            }
            #expect(servedWhileCut, "no write reached the promoted replica within 30 s")
            #expect(try await cluster.primary(forSlot: HashSlot.of(key), excluding: primary) !== primary)

            try cluster.heal(primary)
            try await cluster.waitUntilStable()
            let role = try await cluster.send(RESPCommand("ROLE"), to: primary).array?.first?.string
            #expect(role == "slave", "the old primary follows the promoted one")
            let value = try #require(Int(try await client.get(key).map { String(buffer: $0) } ?? ""))
            #expect(value >= acknowledged && value <= acknowledged + indeterminate, "\(value), \(acknowledged)+\(indeterminate)")
        }
    }

    @Test func readsGoToAReplicaWhenAskedAndToThePrimaryWhenItIsGone() async throws {
        try await RedisCluster.with { cluster in
            var configuration = cluster.configuration
            configuration.readFromReplicas = true
            configuration.commandTimeout = .seconds(5)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            let key = "replicated"
            let replies = try await client.pipeline([RESPCommand("SET", .string(key), "1"), RESPCommand("WAIT", "1", "2000")])
            #expect(replies[1].int == 1)
            let primary = try await cluster.primary(forSlot: HashSlot.of(key))
            let replica = try await cluster.replica(of: primary)
            /// How many GETs a node has served.
            func gets(_ node: RedisServer) async throws -> Int {
                let info = RedisInfo(try await cluster.send(RESPCommand("INFO", "commandstats"), to: node).string ?? "")
                return info.commandStatistics["get"]?.calls ?? 0
            }
            // The replica's connection comes up in the background; until then the primary answers.
            let deadline = ContinuousClock.now + .seconds(10)
            while try await gets(replica) == 0 {
                #expect(try await client.get(key).map { String(buffer: $0) } == "1")
                try #require(ContinuousClock.now < deadline, "no read reached the replica")
                try await Task.sleep(for: .milliseconds(20))
            }
            let (primaryBefore, replicaBefore) = (try await gets(primary), try await gets(replica))
            for _ in 0..<20 { #expect(try await client.get(key).map { String(buffer: $0) } == "1") }
            #expect(try await gets(replica) == replicaBefore + 20)
            #expect(try await gets(primary) == primaryBefore)
            // Writes still go to the primary.
            try await client.set(key, to: "2")
            #expect(try await cluster.send(RESPCommand("GET", .string(key)), to: primary).string == "2")

            // The replica dies: reads are served by the primary, within their timeout.
            await replica.kill()
            let start = ContinuousClock.now
            for _ in 0..<5 { #expect(try await client.get(key).map { String(buffer: $0) } == "2") }
            #expect(ContinuousClock.now - start < .seconds(5))
        }
    }

    /// A function that refuses to run while its slot migrates (`TRYAGAIN`, having written nothing,
    /// as the store's do) goes again, in a pipeline, once the slot is handed over, while the rest
    /// of the pipeline keeps its replies. (The refusal came back as the reply: the store's
    /// listener dropped the replies of every other bucket of its pipeline.)
    @Test func aPipelinedFunctionRefusedDuringAMigrationRunsOnceTheSlotIsSettled() async throws {
        let library = try LuaLibrary(
            source: """
                #!lua name=guarded_test
                redis.register_function('guarded_incr', function(keys, args)
                  local probe = redis.pcall('EXISTS', keys[1] .. ':probe')
                  if type(probe) == 'table' and probe.err then return redis.error_reply('TRYAGAIN migrating') end
                  return redis.call('INCR', keys[1])
                end)
                """)
        try await RedisCluster.with { cluster in
            var configuration = cluster.configuration
            configuration.commandTimeout = .seconds(20)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            client.preload(library)
            let (moving, staying) = ("{moving}:counter", "{staying}:counter")
            try #require(HashSlot.of(moving) != HashSlot.of(staying))
            for key in [moving, staying] { _ = try await client.send(RESPCommand("SET", .string(key), "0")) }
            let slot = HashSlot.of(moving)
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            // The slot migrates with its keys still on the source: the function runs there, and
            // its probe (a missing key of the migrating slot) is refused.
            _ = try await cluster.beginMigration(ofSlot: slot, to: target, moving: [])
            let call = { (key: String) in RESPCommand("FCALL", "guarded_incr", "1", .string(key)) }
            let pipeline = Task { try await client.pipeline([call(moving), call(staying)]) }
            try await pollUntil("the moving key's call to be refused") {
                let info = RedisInfo(try await cluster.send(RESPCommand("INFO", "errorstats"), to: source).string ?? "")
                return info.fields["errorstat_TRYAGAIN"] != nil
            }
            try await cluster.finish(try await cluster.beginMigration(ofSlot: slot, to: target))
            let replies = try await pipeline.value
            #expect(replies.map(\.int) == [1, 1], "\(replies)")
            for key in [moving, staying] { #expect(try await client.get(key).map { String(buffer: $0) } == "1") }
        }
    }

    /// A compatible revision of a library replaces older ones in place, primary by primary, and
    /// never a newer one: app servers of two revisions side by side (a rolling deploy) do not take
    /// a server back. `preload` does it in the background.
    @Test func anOlderLibraryRevisionIsReplacedInPlaceAndANewerOneKept() async throws {
        func library(_ revision: Int?) throws -> LuaLibrary {
            try LuaLibrary(
                source: "#!lua name=revision_test\n" + (revision.map { "-- revision: \($0)\n" } ?? "")
                    + "redis.register_function('revision_test', function() return \(revision ?? 0) end)\n")
        }
        #expect(try library(nil).revision == 0 && library(7).revision == 7)
        try await RedisCluster.with { cluster in
            let primaries = try await cluster.primaries()
            // One without a revision (as 0.1.0's source), one at 1, one at 3.
            for (node, revision) in zip(primaries, [nil, 1, 3]) { _ = try await cluster.send(try library(revision).loadCommand, to: node) }
            func revisions() async throws -> [Int] {
                var answers: [Int] = []
                for node in primaries {
                    answers.append(try await cluster.send(RESPCommand("FCALL", "revision_test", "0"), to: node).int ?? -1)
                }
                return answers
            }
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            #expect(try await client.upgradeInPlace(library(2)) == 2)
            #expect(try await revisions() == [2, 2, 3])
            #expect(try await client.upgradeInPlace(library(1)) == 0)
            #expect(try await revisions() == [2, 2, 3])

            let newer = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await newer.close() } }
            newer.preload(try library(4))
            try await pollUntil("every primary to have revision 4") { try await revisions() == [4, 4, 4] }
        }
    }

    @Test func functionsAreLoadedOnEveryPrimaryAndRoutedByTheirFirstKey() async throws {
        let library = try LuaLibrary(
            source: """
                #!lua name=cluster_test
                redis.register_function('cluster_test_incr', function(keys, args)
                  return redis.call('INCRBY', keys[1], args[1])
                end)
                """)
        try await RedisCluster.with { cluster in
            let client = try HiredisClient.started(configuration: cluster.configuration)
            defer { Task { await client.close() } }
            client.preload(library)
            for index in 0..<30 {
                let reply = try await client.call(
                    "cluster_test_incr", in: library, keys: [.string("counter-\(index)")], arguments: [.integer(index)])
                #expect(reply.int == index)
            }
            let listed = try await client.sendToEveryPrimary(RESPCommand("FUNCTION", "LIST", "LIBRARYNAME", "cluster_test"))
            #expect(listed.count == 3 && listed.allSatisfy { ($0.array?.count ?? 0) == 1 })
        }
    }
}

@Suite("Sentinel")
struct SentinelTests {
    @Test func theClientFollowsAFailoverAndAKilledPrimary() async throws {
        try await RedisSentinelGroup.with { group in
            var configuration = group.configuration
            configuration.commandTimeout = .seconds(15)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("color", to: "blue")
            #expect(try await client.send(RESPCommand("WAIT", "2", "2000")).int == 2)

            // A manual failover (+switch-master, the old primary demoted: READONLY).
            let first = try await group.failover()
            try await client.set("color", to: "green")
            #expect(try await group.send(RESPCommand("GET", "color"), to: first).string == "green")
            #expect(try await client.send(RESPCommand("WAIT", "1", "2000")).int ?? 0 >= 1)

            // The primary dies: the Sentinels promote a replica, the client rediscovers.
            let second = try await group.killPrimary()
            #expect(second !== first)
            #expect(try await client.get("color").map { String(buffer: $0) } == "green")
            try await client.set("color", to: "red")
            #expect(try await group.send(RESPCommand("GET", "color"), to: second).string == "red")
        }
    }

    /// A Sentinel that names a replica (as one that lags behind a failover does) is passed over
    /// for the next, instead of being asked again and again while nothing connects.
    @Test func aSentinelThatNamesAReplicaIsPassedOver() async throws {
        try await RedisSentinelGroup.with(.init(replicas: 1, sentinels: 2)) { group in
            let primary = try await group.primary()
            let replica = try #require(group.nodes.first { $0 !== primary })
            let stale = group.sentinels[0]
            _ = try await group.send(RESPCommand("SENTINEL", "REMOVE", "mymaster"), to: stale)
            _ = try await group.send(RESPCommand("SENTINEL", "MONITOR", "mymaster", "127.0.0.1", .integer(replica.port), 2), to: stale)
            let named = try await group.send(RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"), to: stale)
            #expect(named.array?.last?.int == replica.port, "the first Sentinel names the replica")

            var configuration = group.configuration
            configuration.topology = .sentinel(sentinels: [stale.address, group.sentinels[1].address], primaryName: "mymaster")
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("k", to: "v")
            #expect(try await group.send(RESPCommand("GET", "k"), to: primary).string == "v")
        }
    }

    /// Sentinels that require an ACL user of their own (not the data nodes'): `sentinelUsername`
    /// and `sentinelPassword`.
    @Test func sentinelsWithAnACLUserOfTheirOwn() async throws {
        try await RedisSentinelGroup.with(.init(replicas: 1, sentinels: 2)) { group in
            let primary = try await group.primary()  // (the harness asks the Sentinels as the default user)
            for sentinel in group.sentinels {
                _ = try await group.send(RESPCommand("ACL", "SETUSER", "watcher", "on", ">watcher-password", "+@all"), to: sentinel)
                _ = try await group.send(RESPCommand("ACL", "SETUSER", "default", "off"), to: sentinel)
            }
            var refused = group.configuration
            refused.connectTimeout = .seconds(1)
            refused.commandTimeout = .seconds(1)
            let anonymous = try HiredisClient.started(configuration: refused)
            await #expect(throws: HiredisError.self) { try await anonymous.set("k", to: "v") }
            await anonymous.close()

            var configuration = group.configuration
            configuration.sentinelUsername = "watcher"
            configuration.sentinelPassword = "watcher-password"
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("k", to: "v")
            #expect(try await group.send(RESPCommand("GET", "k"), to: primary).string == "v")

            // The same in the URL's query.
            let fromURL = try HiredisClient.started(
                configuration: try HiredisConfiguration(url: group.url + "?sentinel_username=watcher&sentinel_password=watcher-password"))
            defer { Task { await fromURL.close() } }
            try await fromURL.set("k", to: "from the URL")
            #expect(try await group.send(RESPCommand("GET", "k"), to: primary).string == "from the URL")
        }
    }

    /// Data nodes and Sentinels on TLS only (`rediss+sentinel://`, the Sentinels with the nodes'
    /// TLS settings): the client finds the primary and follows a failover.
    @Test func aTLSGroupIsFollowedThroughAFailover() async throws {
        let certificates = try await TLSCertificates.make()
        var options = RedisSentinelGroup.Options(replicas: 1, sentinels: 3)
        options.node.tls = certificates
        options.sentinelTLS = certificates
        try await RedisSentinelGroup.with(options) { group in
            #expect(group.url.hasPrefix("rediss+sentinel://") && !group.url.contains("sentinel_tls"))
            var configuration = try HiredisConfiguration(url: group.url)
            configuration.commandTimeout = .seconds(15)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("color", to: "blue")
            let promoted = try await group.failover()
            try await client.set("color", to: "green")
            #expect(try await group.send(RESPCommand("GET", "color"), to: promoted).string == "green")
        }
    }

    /// Sentinels on TLS in front of plaintext data nodes: TLS settings for the Sentinels alone
    /// (`sentinel_tls_` options). Without them the client is refused with a typed error.
    @Test func sentinelsOnTLSInFrontOfPlaintextNodes() async throws {
        var options = RedisSentinelGroup.Options(replicas: 1, sentinels: 2)
        options.sentinelTLS = try await TLSCertificates.make()
        try await RedisSentinelGroup.with(options) { group in
            #expect(group.url.hasPrefix("redis+sentinel://") && group.url.contains("sentinel_tls_ca_file="))
            let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: group.url))
            defer { Task { await client.close() } }
            try await client.set("k", to: "v")
            #expect(try await group.send(RESPCommand("GET", "k"), to: try await group.primary()).string == "v")

            var plaintext = group.configuration
            plaintext.sentinelTLS = .sameAsNodes
            plaintext.connectTimeout = .seconds(1)
            plaintext.commandTimeout = .seconds(1)
            let refused = try HiredisClient.started(configuration: plaintext)
            let error = await expectRedisError { try await refused.set("k", to: "w") }
            #expect(error?.code == .cannotConnect)
            await refused.close()
        }
    }

    /// A forced failover (`SENTINEL FAILOVER`) through `sentinel`; waits until it names a new
    /// primary that accepts writes and the old one is its replica (before that, a write to the
    /// old one would succeed and be lost). (The group's own helper asks the first Sentinel, which
    /// these tests kill.)
    private func failover(_ group: RedisSentinelGroup, through sentinel: RedisServer) async throws -> RedisServer {
        let old = try await group.primary()
        _ = try await group.send(RESPCommand("SENTINEL", "FAILOVER", "mymaster"), to: sentinel)
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let named = try await group.send(RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"), to: sentinel)
            if let port = named.array?.last?.int, port != old.port, let new = group.nodes.first(where: { $0.port == port }),
                try await group.send(RESPCommand("ROLE"), to: new).array?.first?.string == "master",
                try await group.send(RESPCommand("ROLE"), to: old).array?.first?.string == "slave"
            {
                return new
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw RedisServer.StartError(description: "no failover within 20 s")
    }

    /// A client given one Sentinel learns the others from it (`SENTINEL SENTINELS`) and asks them
    /// when it is gone: it follows a failover that only they can tell it about. With
    /// `sentinel_discovery=off` the listed Sentinel is the only one asked.
    @Test func sentinelsFoundThroughAConfiguredOneCarryTheClientWhenItIsGone() async throws {
        try await RedisSentinelGroup.with(.init(replicas: 1, sentinels: 3)) { group in
            var configuration = group.configuration
            configuration.topology = .sentinel(sentinels: [group.sentinels[0].address], primaryName: "mymaster")
            configuration.commandTimeout = .seconds(15)
            configuration.connectTimeout = .seconds(2)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("k", to: "before")
            var listedOnly = try HiredisConfiguration(url: "redis+sentinel://\(group.sentinels[0].address)/mymaster?sentinel_discovery=off")
            #expect(!listedOnly.discoverSentinels)
            listedOnly.connectTimeout = .seconds(2)
            listedOnly.commandTimeout = .seconds(3)
            let confined = try HiredisClient.started(configuration: listedOnly)
            defer { Task { await confined.close() } }
            try await confined.set("k", to: "before")

            await group.sentinels[0].kill()
            let promoted = try await failover(group, through: group.sentinels[1])
            try await client.set("k", to: "after")
            #expect(try await group.send(RESPCommand("GET", "k"), to: promoted).string == "after")
            // Asked only the one it was given, the other client cannot find the new primary.
            await #expect(throws: HiredisError.self) { try await confined.set("k", to: "nowhere") }
        }
    }

    /// Sentinels learn of each other from hello messages that any client of the data nodes can
    /// publish. A rogue Sentinel announced that way, naming a decoy primary of its own, is found
    /// by the client, but its answer is not taken, even when it is the only Sentinel left: the
    /// decoy never sees the client (nor its password), and the client finds the real primary once
    /// an honest Sentinel is back. (The rogue is a fake: a real Sentinel would take the group's
    /// newer configuration from the others' hellos and turn honest.)
    @Test func aDiscoveredSentinelIsNotTrustedToNameANode() async throws {
        var options = RedisSentinelGroup.Options(replicas: 1, sentinels: 2)
        options.node.password = "data-secret"
        try await RedisSentinelGroup.with(options) { group in
            try await RedisServer.with(.init(notifyKeyspaceEvents: nil, password: "decoy-secret")) { decoy in
                let asked = NIOLockedValueBox(0)
                let rogue = try await FakeServer(answering: { _, _, text in
                    FakeServer.commands(in: text).map { words in
                        switch words.dropFirst().first?.uppercased() {
                        case "GET-MASTER-ADDR-BY-NAME":
                            asked.withLockedValue { $0 += 1 }
                            return "*2\r\n$9\r\n127.0.0.1\r\n$\(String(decoy.port).count)\r\n\(decoy.port)\r\n"
                        case "SENTINELS", "REPLICAS": return "*0\r\n"
                        default: return words.first?.uppercased() == "PING" ? "+PONG\r\n" : "+OK\r\n"
                        }
                    }.joined()
                })
                defer { Task { await rogue.close() } }
                let primary = try await group.primary()
                let hello = "127.0.0.1,\(rogue.port),\(String(repeating: "f", count: 40)),0,mymaster,127.0.0.1,\(primary.port),0"
                let deadline = ContinuousClock.now + .seconds(10)
                while try await group.send(RESPCommand("SENTINEL", "SENTINELS", "mymaster"), to: group.sentinels[0]).array?
                    .contains(where: { $0.array?.contains(where: { $0.string == "\(rogue.port)" }) == true }) != true
                {
                    _ = try await group.send(RESPCommand("PUBLISH", "__sentinel__:hello", .string(hello)), to: primary)
                    try #require(ContinuousClock.now < deadline, "the Sentinel did not take the hello")
                    try await Task.sleep(for: .milliseconds(100))
                }

                var configuration = group.configuration
                configuration.topology = .sentinel(sentinels: [group.sentinels[0].address], primaryName: "mymaster")
                configuration.commandTimeout = .seconds(2)
                configuration.connectTimeout = .seconds(1)
                let client = try HiredisClient.started(configuration: configuration)
                defer { Task { await client.close() } }
                try await client.set("k", to: "before")

                // The configured Sentinel goes, a failover happens, and the honest Sentinel goes
                // too: the rogue is the only one left to ask once the client's connections drop.
                await group.sentinels[0].kill()
                let promoted = try await failover(group, through: group.sentinels[1])
                await group.sentinels[1].kill()
                _ = try await group.send(RESPCommand("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"), to: promoted)
                await #expect(throws: HiredisError.self) { try await client.set("k", to: "lost") }
                // (The call may fail on the connection killed under it, before the client asks.)
                try await pollUntil("the client to ask the rogue") {
                    await #expect(throws: HiredisError.self) { try await client.set("k", to: "lost") }
                    return asked.withLockedValue { $0 } > 0
                }
                // Had the client connected to the decoy, its AUTH with the group's password
                // would be in the decoy's ACL log.
                #expect(try await decoy.send(RESPCommand("ACL", "LOG")).array?.isEmpty == true)

                // The honest one is back: the client finds the real primary through it.
                try await group.sentinels[1].restart()
                try await pollUntil("the client to find the primary again") { (try? await client.set("k", to: "after")) != nil }
                #expect(try await group.send(RESPCommand("GET", "k"), to: promoted).string == "after")
            }
        }
    }

    @Test func sentinelsThatAreDownAreSkipped() async throws {
        try await RedisSentinelGroup.with(.init(replicas: 1, sentinels: 3)) { group in
            await group.sentinels[0].kill()
            var configuration = group.configuration
            configuration.connectTimeout = .seconds(2)
            let client = try HiredisClient.started(configuration: configuration)
            defer { Task { await client.close() } }
            try await client.set("k", to: "v")
            #expect(try await group.send(RESPCommand("GET", "k"), to: try await group.primary()).string == "v")
        }
    }
}
