@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

/// A cluster node (or whoever answers as one) names where a command must go: the client connects
/// there, with the credentials, only when the cluster's own topology names that node.
@Suite("Cluster redirections go only to nodes the topology names")
struct RedirectionTrustTests {
    /// A `MOVED` to an address the topology does not name (also when read again) is refused with
    /// a typed error, and that address never sees a connection, let alone the password.
    @Test func aMovedToANodeTheTopologyDoesNotNameIsRefusedAndGetsNoCredentials() async throws {
        let reached = NIOLockedValueBox<[String]>([])
        let elsewhere = try await FakeServer(answering: { _, _, text in
            reached.withLockedValue { $0.append(text) }
            return "+OK\r\n"
        })
        let ownPort = NIOLockedValueBox(0)
        let node = try await FakeServer(answering: { _, _, text in
            FakeServer.commands(in: text).map { command in
                switch command.first?.uppercased() {
                case "CLUSTER": return Self.shards(primaryPort: ownPort.withLockedValue { $0 })
                case "GET": return "-MOVED 866 127.0.0.1:\(elsewhere.port)\r\n"
                default: return "+OK\r\n"
                }
            }.joined()
        })
        ownPort.withLockedValue { $0 = node.port }
        var configuration = try HiredisConfiguration(url: "redis+cluster://:s3cret@127.0.0.1:\(node.port)")
        configuration.commandTimeout = .milliseconds(800)  // tried again until then (a reshard may settle)
        let client = try HiredisClient.started(configuration: configuration)
        let error = await expectRedisError { _ = try await client.send(RESPCommand("GET", "k")) }
        #expect(error?.code == .untrustedRedirection && error?.commandMayHaveRun == false)
        #expect(reached.withLockedValue { $0 }.isEmpty, "the redirect target was contacted")
        await client.close()
        await node.close()
        await elsewhere.close()
    }

    /// A node that joined (a reshard moves slots to it) is named once the topology is read again:
    /// the redirection is followed there.
    @Test func aMovedToANodeThatJoinedIsFollowed() async throws {
        let joined = try await FakeServer(answering: { _, _, text in
            FakeServer.commands(in: text).map { $0.first?.uppercased() == "GET" ? "$6\r\nmoved!\r\n" : "+OK\r\n" }.joined()
        })
        // The first read: this node serves every slot; later ones: the new node has 100...
        let (node, topologyReads) = try await Self.fakeNode(get: "-MOVED 7629 127.0.0.1:\(joined.port)\r\n") { read, own in
            read == 1 ? Self.shards(primaryPort: own) : Self.shards([(own, 0, 99), (joined.port, 100, 16383)])
        }
        let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: "redis+cluster://127.0.0.1:\(node.port)"))
        #expect(try await client.send(RESPCommand("GET", "k")).string == "moved!")
        #expect(topologyReads.withLockedValue { $0 } >= 2, "the topology was read again before following")
        await client.close()
        await node.close()
        await joined.close()
    }

    /// A redirection that has the topology read again waits for that read only until the call's
    /// deadline: here the read meets two primaries that never answer (each costs the connect
    /// timeout) and a node that stopped answering `CLUSTER`, and the call still ends within its
    /// command timeout. (It waited for the whole read: about 5 s.)
    @Test func aRedirectionWaitsForATopologyReadOnlyUntilTheCallsDeadline() async throws {
        let silent = [try await FakeServer(reply: { _, _ in nil }), try await FakeServer(reply: { _, _ in nil })]
        // The first read names the silent primaries; later reads get no answer. The MOVED goes to
        // a node the topology does not name.
        let (node, _) = try await Self.fakeNode(get: "-MOVED 7629 127.0.0.1:1\r\n") { read, own in
            read == 1 ? Self.shards([(own, 0, 8000), (silent[0].port, 8001, 12000), (silent[1].port, 12001, 16383)]) : nil
        }
        var configuration = try HiredisConfiguration(url: "redis+cluster://127.0.0.1:\(node.port)")
        configuration.commandTimeout = .seconds(1)
        configuration.connectTimeout = .seconds(2)
        let client = try HiredisClient.started(configuration: configuration)
        let start = ContinuousClock.now
        let error = await expectRedisError { _ = try await client.send(RESPCommand("GET", "k")) }
        let elapsed = ContinuousClock.now - start
        #expect(error?.code == .untrustedRedirection || error?.code == .timedOut, "\(String(describing: error))")
        #expect(elapsed < .milliseconds(2500), "the call took \(elapsed)")
        await client.close()
        await node.close()
        for server in silent { await server.close() }
    }

    /// A fake cluster node: its `n`th topology read (`CLUSTER`) answers `shards(n, its port)`
    /// (nil: no answer), `GET` answers `get`, anything else `+OK`. Returns it and its count of
    /// topology reads.
    static func fakeNode(
        get: String, shards: @escaping @Sendable (_ read: Int, _ ownPort: Int) -> String?
    ) async throws -> (FakeServer, NIOLockedValueBox<Int>) {
        let ownPort = NIOLockedValueBox(0)
        let topologyReads = NIOLockedValueBox(0)
        let node = try await FakeServer(answering: { _, _, text in
            FakeServer.commands(in: text).map { command in
                switch command.first?.uppercased() {
                case "CLUSTER":
                    let read = topologyReads.withLockedValue { value in
                        value += 1
                        return value
                    }
                    return shards(read, ownPort.withLockedValue { $0 }) ?? ""
                case "GET": return get
                default: return "+OK\r\n"
                }
            }.joined()
        })
        ownPort.withLockedValue { $0 = node.port }
        return (node, topologyReads)
    }

    /// A `CLUSTER SHARDS` reply: one shard with every slot, its primary on `primaryPort`.
    static func shards(primaryPort: Int) -> String { shards([(primaryPort, 0, 16383)]) }

    /// A `CLUSTER SHARDS` reply: one shard per (primary's port, first slot, last slot).
    static func shards(_ shards: [(port: Int, first: Int, last: Int)]) -> String {
        "*\(shards.count)\r\n"
            + shards.enumerated().map { index, shard in
                let fields = [
                    "$2\r\nid\r\n$1\r\n\(index)\r\n", "$4\r\nport\r\n:\(shard.port)\r\n", "$2\r\nip\r\n$9\r\n127.0.0.1\r\n",
                    "$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n", "$4\r\nrole\r\n$6\r\nmaster\r\n", "$6\r\nhealth\r\n$6\r\nonline\r\n",
                ]
                return "*4\r\n$5\r\nslots\r\n*2\r\n:\(shard.first)\r\n:\(shard.last)\r\n$5\r\nnodes\r\n*1\r\n*12\r\n" + fields.joined()
            }.joined()
    }
}
