import NIOCore
import Testing

@testable import HiredisNIO

// MARK: Reply builders

func bulk(_ text: String) -> RESPReply { .bulkString(ByteBuffer(string: text)) }

/// One node of a `CLUSTER SHARDS` reply, as the flat key-value array Redis 7 sends in RESP2.
/// A nil field is left out of the reply.
func shardNode(
    id: String, port: Int? = nil, tlsPort: Int? = nil, ip: String? = "127.0.0.1", endpoint: String? = "127.0.0.1",
    role: String, health: String = "online"
) -> RESPReply {
    var fields: [RESPReply] = [bulk("id"), bulk(id)]
    if let port { fields += [bulk("port"), .integer(port)] }
    if let tlsPort { fields += [bulk("tls-port"), .integer(tlsPort)] }
    if let ip { fields += [bulk("ip"), bulk(ip)] }
    if let endpoint { fields += [bulk("endpoint"), bulk(endpoint)] }
    fields += [bulk("role"), bulk(role), bulk("replication-offset"), .integer(72156), bulk("health"), bulk(health)]
    return .array(fields)
}

/// One shard of a `CLUSTER SHARDS` reply: `slots` holds flat start/end pairs.
func shard(slots: [Int], nodes: [RESPReply]) -> RESPReply {
    .array([bulk("slots"), .array(slots.map(RESPReply.integer)), bulk("nodes"), .array(nodes)])
}

/// One node of a `CLUSTER SLOTS` entry: endpoint, port, id.
func slotsNode(_ host: RESPReply, _ port: Int, _ id: String) -> RESPReply {
    .array([host, .integer(port), bulk(id)])
}

/// One `CLUSTER SLOTS` entry: start, end, primary, replicas...
func slotsEntry(_ start: Int, _ end: Int, _ nodes: RESPReply...) -> RESPReply {
    .array([.integer(start), .integer(end)] + nodes)
}

func node(_ address: String, _ id: String, isOnline: Bool = true) -> ClusterTopology.Node {
    ClusterTopology.Node(address: address, id: id, isOnline: isOnline)
}

/// A topology with primaries on 127.0.0.1: each slot range with its primary's port, parsed from
/// a `CLUSTER SLOTS` reply as the router gets one.
func topology(_ assignments: [(ClosedRange<Int>, Int)]) throws -> ClusterTopology {
    var entries: [RESPReply] = []
    for (range, port) in assignments {
        entries.append(slotsEntry(range.lowerBound, range.upperBound, slotsNode(bulk("127.0.0.1"), port, "id-\(port)")))
    }
    return try ClusterTopology(slotsReply: .array(entries), fallbackHost: "127.0.0.1")
}

// MARK: - Topology
