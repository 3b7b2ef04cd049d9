/// A Redis Cluster's shards as a node reports them: which primary serves which slots, and its
/// replicas.
public struct ClusterTopology: Sendable, Hashable {
    /// One node of a shard.
    public struct Node: Sendable, Hashable {
        /// `host:port` to connect to.
        public var address: String
        /// The node's id (40 hex characters), when known.
        public var id: String
        /// Whether the node reported itself healthy (`CLUSTER SHARDS` `health` = `online`).
        public var isOnline: Bool
    }

    /// A primary, its slot ranges and its replicas.
    public struct Shard: Sendable, Hashable {
        public var slots: [ClosedRange<Int>]
        public var primary: Node
        public var replicas: [Node]
    }

    /// The shards that serve slots.
    public var shards: [Shard]

    /// The primaries' addresses.
    public var primaries: [String] { shards.map(\.primary.address) }

    /// Whether every one of the 16384 slots has a primary.
    public var coversEverySlot: Bool {
        shards.reduce(0) { $0 + $1.slots.reduce(0) { $0 + $1.count } } == HashSlot.count
    }

    /// Parses the reply to `CLUSTER SHARDS` (Redis 7): an array of maps (flat key-value arrays
    /// in RESP2) with `slots` (flat start/end pairs) and `nodes`. `fallbackHost` replaces an
    /// empty or `?` endpoint (a node that does not know its own address). A node lists `port` and
    /// `tls-port` whatever the connection's type when both are configured (7.0 with
    /// `tls-cluster yes`, 7.2+ always): `usesTLS` picks `tls-port` first, else `port` first.
    public init(shardsReply reply: RESPReply, fallbackHost: String, usesTLS: Bool = false) throws(HiredisError) {
        guard let items = reply.array else { throw .unexpectedReply(expected: "CLUSTER SHARDS array", got: reply) }
        var shards: [Shard] = []
        for item in items {
            let fields = item.fieldMap
            let flat = fields["slots"]?.array?.compactMap(\.int) ?? []
            var ranges: [ClosedRange<Int>] = []
            var index = 0
            while index + 1 < flat.count {
                if flat[index] <= flat[index + 1] { ranges.append(flat[index]...flat[index + 1]) }
                index += 2
            }
            var primary: Node?
            var replicas: [Node] = []
            for nodeReply in fields["nodes"]?.array ?? [] {
                let node = nodeReply.fieldMap
                // An empty endpoint means "the host you asked" (cluster-preferred-endpoint-type
                // unknown-endpoint); "?" means the node does not know it: try its IP.
                var host = node["endpoint"]?.string ?? "?"
                if host == "?" { host = node["ip"]?.string ?? "" }
                if host.isEmpty || host == "?" { host = fallbackHost }
                let (plain, secure) = (node["port"]?.int.flatMap { $0 > 0 ? $0 : nil }, node["tls-port"]?.int.flatMap { $0 > 0 ? $0 : nil })
                guard let port = usesTLS ? (secure ?? plain) : (plain ?? secure) else { continue }
                let parsed = Node(
                    address: HiredisAddress(host: host, port: port).description, id: node["id"]?.string ?? "",
                    isOnline: node["health"]?.string.map { $0 == "online" } ?? true)
                if node["role"]?.string == "master" { primary = parsed } else { replicas.append(parsed) }
            }
            if let primary, !ranges.isEmpty { shards.append(Shard(slots: ranges, primary: primary, replicas: replicas)) }
        }
        self.shards = shards
    }

    /// Parses the reply to `CLUSTER SLOTS` (older servers): `[start, end, [host, port, id], replicas...]`.
    public init(slotsReply reply: RESPReply, fallbackHost: String) throws(HiredisError) {
        guard let items = reply.array else { throw .unexpectedReply(expected: "CLUSTER SLOTS array", got: reply) }
        var byPrimary: [String: Shard] = [:]
        var order: [String] = []
        for item in items {
            guard let parts = item.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int, start <= end
            else { continue }
            func node(_ reply: RESPReply) -> Node? {
                guard let fields = reply.array, fields.count >= 2, let port = fields[1].int else { return nil }
                var host = fields[0].string ?? ""
                if host.isEmpty || host == "?" { host = fallbackHost }
                return Node(
                    address: HiredisAddress(host: host, port: port).description, id: fields.count > 2 ? fields[2].string ?? "" : "",
                    isOnline: true)
            }
            guard let primary = node(parts[2]) else { continue }
            if byPrimary[primary.address] == nil {
                byPrimary[primary.address] = Shard(slots: [], primary: primary, replicas: parts.dropFirst(3).compactMap(node))
                order.append(primary.address)
            }
            byPrimary[primary.address]?.slots.append(start...end)
        }
        shards = order.compactMap { byPrimary[$0] }
    }
}

/// A `MOVED` or `ASK` error reply: where the slot lives now.
struct Redirection: Sendable, Hashable {
    enum Kind { case moved, ask }
    let kind: Kind
    let slot: Int
    /// Nil for an unknown endpoint (`?:6381`): the topology must say where the slot lives.
    let address: String?
    /// The port the reply named.
    let port: Int

    /// Parses `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`; nil for other errors.
    init?(_ error: HiredisServerError, fallbackHost: String) {
        let words = error.message.split(separator: " ")
        guard words.count == 3, let slot = Int(words[1]), (0..<HashSlot.count).contains(slot) else { return nil }
        switch words[0] {
        case "MOVED": kind = .moved
        case "ASK": kind = .ask
        default: return nil
        }
        // An empty host (":6381") means the host the reply came from (the spec's "unknown
        // endpoint": same endpoint, this port). "?" is a node that prefers hostnames and has none:
        // its port alone names nothing (on a cluster whose nodes all use 6379 it would name the
        // replying node itself), so the address is left to the topology. IPv6 hosts come
        // unbracketed ("::1:6381"): the port follows the last colon.
        guard let colon = words[2].lastIndex(of: ":"), let port = Int(words[2][words[2].index(after: colon)...]) else { return nil }
        let named = words[2][..<colon]
        self.slot = slot
        self.port = port
        if named == "?" {
            self.address = nil
            return
        }
        let host = named.isEmpty ? fallbackHost : String(named)
        self.address = HiredisAddress(host: host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host, port: port).description
    }

    init(kind: Kind, slot: Int, address: String?, port: Int? = nil) {
        self.kind = kind
        self.slot = slot
        self.address = address
        self.port = port ?? address.flatMap { HiredisAddress(parsing: Substring($0), defaultPort: 6379)?.port } ?? 0
    }
}
