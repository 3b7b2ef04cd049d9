import NIOCore
import Testing

@testable import HiredisNIO

@Suite("CLUSTER SHARDS and CLUSTER SLOTS parsing")
struct ClusterTopologyParsingTests {
    @Test func parsesClusterShardsIntoPrimariesAndReplicas() throws {
        // The shape redis-server 7 answers for the usual three primaries with one replica each.
        let reply = RESPReply.array([
            shard(
                slots: [0, 5460],
                nodes: [
                    shardNode(id: "a1", port: 30001, role: "master"), shardNode(id: "a2", port: 30004, role: "replica"),
                ]),
            shard(
                slots: [5461, 10922],
                nodes: [
                    // Replicas may come first: the role decides, not the order.
                    shardNode(id: "b2", port: 30005, role: "replica"), shardNode(id: "b1", port: 30002, role: "master"),
                ]),
            shard(
                slots: [10923, 16383],
                nodes: [
                    shardNode(id: "c1", port: 30003, role: "master"), shardNode(id: "c2", port: 30006, role: "replica"),
                ]),
        ])
        let topology = try ClusterTopology(shardsReply: reply, fallbackHost: "10.9.9.9")
        let expected: [ClusterTopology.Shard] = [
            .init(slots: [0...5460], primary: node("127.0.0.1:30001", "a1"), replicas: [node("127.0.0.1:30004", "a2")]),
            .init(slots: [5461...10922], primary: node("127.0.0.1:30002", "b1"), replicas: [node("127.0.0.1:30005", "b2")]),
            .init(slots: [10923...16383], primary: node("127.0.0.1:30003", "c1"), replicas: [node("127.0.0.1:30006", "c2")]),
        ]
        #expect(topology.shards == expected)
        #expect(topology.primaries == ["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"])
        #expect(topology.coversEverySlot)
    }

    @Test func shardKeepsEachOfItsSlotRanges() throws {
        // After resharding a primary may serve several ranges; a reversed pair is malformed and dropped.
        let reply = RESPReply.array([
            shard(slots: [0, 100, 200, 300, 500, 400, 16383, 16383], nodes: [shardNode(id: "a", port: 30001, role: "master")])
        ])
        let topology = try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1")
        #expect(topology.shards.map(\.slots) == [[0...100, 200...300, 16383...16383]])
        #expect(!topology.coversEverySlot)
    }

    @Test func shardsWithoutSlotsOrWithoutPrimaryAreLeftOut() throws {
        let reply = RESPReply.array([
            // A primary just added to the cluster, before any slot moved to it: nothing to route there.
            shard(slots: [], nodes: [shardNode(id: "new", port: 30007, role: "master")]),
            // A shard whose primary is not listed: there is nowhere to send its writes.
            shard(slots: [0, 16383], nodes: [shardNode(id: "orphan", port: 30008, role: "replica")]),
            shard(slots: [0, 16383], nodes: [shardNode(id: "a", port: 30001, role: "master")]),
        ])
        let topology = try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1")
        #expect(topology.primaries == ["127.0.0.1:30001"])
    }

    @Test func nodeHealthIsReported() throws {
        let reply = RESPReply.array([
            shard(
                slots: [0, 16383],
                nodes: [
                    shardNode(id: "p", port: 30001, role: "master"),
                    shardNode(id: "r1", port: 30002, role: "replica", health: "loading"),
                    shardNode(id: "r2", port: 30003, role: "replica", health: "fail"),
                ])
        ])
        let parsed = try #require(try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1").shards.first)
        #expect(parsed.primary.isOnline)
        // Only "online" counts as healthy: a loading or failed replica must not serve reads.
        #expect(parsed.replicas.map(\.isOnline) == [false, false])
    }

    @Test func shardsEndpointFallsBackToTheIPThenToTheReplyingHost() throws {
        let reply = RESPReply.array([
            shard(
                slots: [0, 16383],
                nodes: [
                    // `?`: preferred endpoint type hostname, but the node announces none; its IP still works.
                    shardNode(id: "p", port: 30001, ip: "10.0.0.1", endpoint: "?", role: "master"),
                    // Neither endpoint nor IP: only the host that answered is left.
                    shardNode(id: "r", port: 30002, ip: nil, endpoint: "?", role: "replica"),
                ])
        ])
        let parsed = try #require(try ClusterTopology(shardsReply: reply, fallbackHost: "seed.internal").shards.first)
        #expect(parsed.primary.address == "10.0.0.1:30001")
        #expect(parsed.replicas.map(\.address) == ["seed.internal:30002"])
    }

    @Test func emptyShardsEndpointMeansTheHostTheReplyCameFrom() throws {
        // `cluster-preferred-endpoint-type unknown-endpoint` reports an empty endpoint: the server
        // does not know how clients reach it (NAT, load balancer) and expects them to use the host
        // they asked, with the reported port. The node's own IP is the address clients cannot use.
        let reply = RESPReply.array([
            shard(slots: [0, 16383], nodes: [shardNode(id: "p", port: 30001, ip: "172.17.0.2", endpoint: "", role: "master")])
        ])
        let topology = try ClusterTopology(shardsReply: reply, fallbackHost: "redis.example.com")
        #expect(topology.primaries == ["redis.example.com:30001"])
    }

    @Test func shardsIPv6EndpointIsBracketed() throws {
        let reply = RESPReply.array([
            shard(slots: [0, 16383], nodes: [shardNode(id: "p", port: 30001, ip: "::1", endpoint: "::1", role: "master")])
        ])
        // `host:port` must stay parseable when the host has colons of its own.
        #expect(try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1").primaries == ["[::1]:30001"])
    }

    @Test func shardsNodeWithOnlyATLSPortUsesIt() throws {
        // A TLS-only cluster (`port 0`) reports `tls-port` and no `port`.
        let reply = RESPReply.array([
            shard(slots: [0, 16383], nodes: [shardNode(id: "p", tlsPort: 31001, role: "master")])
        ])
        #expect(try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1").primaries == ["127.0.0.1:31001"])
    }

    /// Redis lists both ports of every node whatever the connection's type when both are
    /// configured (7.0 with `tls-cluster yes`, 7.2+ always): a TLS client must take `tls-port`, a
    /// plaintext one `port`. (Taking `port` first, a TLS client opened TLS to the plaintext port.)
    @Test func aNodeWithBothPortsIsReachedOnTheOneOfTheConnectionsType() throws {
        let reply = RESPReply.array([
            shard(
                slots: [0, 16383],
                nodes: [
                    shardNode(id: "p", port: 30001, tlsPort: 31001, role: "master"),
                    shardNode(id: "r", port: 30002, tlsPort: 31002, role: "replica"),
                ])
        ])
        let secure = try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1", usesTLS: true)
        #expect(secure.primaries == ["127.0.0.1:31001"] && secure.shards.first?.replicas.map(\.address) == ["127.0.0.1:31002"])
        let plain = try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1", usesTLS: false)
        #expect(plain.primaries == ["127.0.0.1:30001"] && plain.shards.first?.replicas.map(\.address) == ["127.0.0.1:30002"])
    }

    @Test func parsesClusterSlots() throws {
        let reply = RESPReply.array([
            slotsEntry(0, 5460, slotsNode(bulk("127.0.0.1"), 30001, "a1"), slotsNode(bulk("127.0.0.1"), 30004, "a2")),
            // Redis 7 appends a metadata map to each node; the parser reads the first three fields.
            slotsEntry(
                5461, 10922, .array([bulk("127.0.0.1"), .integer(30002), bulk("b1"), .array([bulk("hostname"), bulk("b.example")])]),
                slotsNode(bulk("127.0.0.1"), 30005, "b2")),
            slotsEntry(10923, 16383, slotsNode(bulk("127.0.0.1"), 30003, "c1")),
        ])
        let topology = try ClusterTopology(slotsReply: reply, fallbackHost: "10.9.9.9")
        let expected: [ClusterTopology.Shard] = [
            .init(slots: [0...5460], primary: node("127.0.0.1:30001", "a1"), replicas: [node("127.0.0.1:30004", "a2")]),
            .init(slots: [5461...10922], primary: node("127.0.0.1:30002", "b1"), replicas: [node("127.0.0.1:30005", "b2")]),
            .init(slots: [10923...16383], primary: node("127.0.0.1:30003", "c1"), replicas: []),
        ]
        #expect(topology.shards == expected)
        #expect(topology.coversEverySlot)
    }

    @Test func clusterSlotsRangesOfOnePrimaryMakeOneShard() throws {
        // CLUSTER SLOTS lists ranges, not shards: a primary with two ranges appears twice.
        let reply = RESPReply.array([
            slotsEntry(0, 99, slotsNode(bulk("127.0.0.1"), 30001, "a")),
            slotsEntry(100, 199, slotsNode(bulk("127.0.0.1"), 30002, "b")),
            slotsEntry(200, 16383, slotsNode(bulk("127.0.0.1"), 30001, "a")),
        ])
        let topology = try ClusterTopology(slotsReply: reply, fallbackHost: "127.0.0.1")
        #expect(topology.primaries == ["127.0.0.1:30001", "127.0.0.1:30002"])
        #expect(topology.shards.map(\.slots) == [[0...99, 200...16383], [100...199]])
        #expect(topology.coversEverySlot)
    }

    @Test func unknownClusterSlotsEndpointMeansTheHostTheReplyCameFrom() throws {
        // NULL (unknown-endpoint), "" and "?" (hostname preferred but none announced) all mean:
        // use the host that answered, with the reported port.
        let reply = RESPReply.array([
            slotsEntry(0, 99, slotsNode(.null, 30001, "a")),
            slotsEntry(100, 199, slotsNode(bulk(""), 30002, "b")),
            slotsEntry(200, 16383, slotsNode(bulk("?"), 30003, "c")),
        ])
        let topology = try ClusterTopology(slotsReply: reply, fallbackHost: "redis.example.com")
        #expect(topology.primaries == ["redis.example.com:30001", "redis.example.com:30002", "redis.example.com:30003"])
    }

    @Test func clusterSlotsEntryWithAReversedRangeIsSkipped() throws {
        // A malformed entry must cost its own range, not crash the process (`start...end` traps
        // when start > end); CLUSTER SHARDS parsing already skips such a pair.
        let reply = RESPReply.array([
            slotsEntry(200, 100, slotsNode(bulk("127.0.0.1"), 30002, "bad")),
            slotsEntry(0, 16383, slotsNode(bulk("127.0.0.1"), 30001, "a")),
        ])
        let topology = try ClusterTopology(slotsReply: reply, fallbackHost: "127.0.0.1")
        #expect(topology.primaries == ["127.0.0.1:30001"])
    }

    @Test func nonArrayRepliesAreRefused() {
        for reply in [RESPReply.null, .simpleString("OK"), .integer(0)] {
            let shards = #expect(throws: HiredisError.self) { try ClusterTopology(shardsReply: reply, fallbackHost: "h") }
            #expect(shards?.code == .unexpectedReply)
            let slots = #expect(throws: HiredisError.self) { try ClusterTopology(slotsReply: reply, fallbackHost: "h") }
            #expect(slots?.code == .unexpectedReply)
        }
    }
}

// MARK: - Redirections
