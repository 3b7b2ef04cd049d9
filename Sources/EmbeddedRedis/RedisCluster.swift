import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import NIOCore

/// A real Redis Cluster on loopback: `primaries` primaries with `replicasPerPrimary` replicas
/// each, created with `redis-cli --cluster create`, with a short `cluster-node-timeout` so that
/// failovers take about a second. For tests and benchmarks.
///
/// ```swift
/// try await RedisCluster.with { cluster in
///     let client = try HiredisClient.started(configuration: cluster.configuration)
///     try await client.set("greeting", to: "hello")  // routed to the slot's primary
///     try await cluster.failover(try await cluster.primary(forSlot: 0))
/// }
/// ```
public final class RedisCluster: Sendable {
    /// How the cluster is made.
    public struct Options: Sendable {
        public var primaries = 3
        public var replicasPerPrimary = 1
        /// `cluster-node-timeout`: how long a node may be silent before it is failed over.
        public var nodeTimeout: Duration = .milliseconds(1000)
        /// Options for every node (keyspace events, append-only file, ...).
        public var node = RedisServer.Options()
        /// Every node behind fault proxies of its own, one for clients and replicas and one for
        /// its cluster bus, and announcing them (`cluster-announce-port`,
        /// `cluster-announce-bus-port`), so that ``partition(_:)`` can cut one node off from all
        /// the others. Plaintext clusters only.
        public var partitionable = false

        public init(primaries: Int = 3, replicasPerPrimary: Int = 1) {
            self.primaries = primaries
            self.replicasPerPrimary = replicasPerPrimary
        }
    }

    /// A migration of one slot that has begun and not ended: the source answers `ASK` for keys
    /// it no longer holds.
    public struct SlotMigration: Sendable {
        public let slot: Int
        public let source: RedisServer
        public let target: RedisServer
    }

    /// Every node, primaries first as created, then those added (``addPrimary()``); roles change
    /// with failovers: see ``primaries()``.
    public var nodes: [RedisServer] { created + added.withLockedValue { $0 } }
    public let options: Options
    private let created: [RedisServer]
    private let added = NIOLockedValueBox<[RedisServer]>([])
    /// With ``Options/partitionable``: each node's proxies, by the node's own port.
    private let proxies = NIOLockedValueBox<[Int: NodeProxies]>([:])

    /// The proxies in front of a partitionable node, and the address its own connections come from.
    private struct NodeProxies: Sendable {
        let client: FaultProxy
        let bus: FaultProxy
        let source: String
    }

    private init(nodes: [RedisServer], options: Options) {
        self.created = nodes
        self.options = options
    }

    /// The port the cluster knows `node` by: its proxy's with ``Options/partitionable``, its own
    /// otherwise.
    public func announcedPort(of node: RedisServer) -> Int {
        proxies.withLockedValue { $0[node.port]?.client.port } ?? node.port
    }

    /// The address the cluster knows `node` by (see ``announcedPort(of:)``).
    public func announcedAddress(of node: RedisServer) -> HiredisAddress {
        HiredisAddress(host: "127.0.0.1", port: announcedPort(of: node))
    }

    /// The node the cluster lists at `port` (its own port or its proxy's).
    private func node(at port: Int) -> RedisServer? {
        nodes.first { $0.port == port || announcedPort(of: $0) == port }
    }

    /// The options of the `index`th node: cluster mode, and with ``Options/partitionable`` an
    /// address of its own for its outgoing connections.
    private static func nodeOptions(_ options: Options, index: Int, busPort: Int) -> RedisServer.Options {
        var node = options.node
        // A TLS cluster talks TLS on its bus and between primaries and replicas too.
        if node.tls != nil { node.extra += [("tls-cluster", "yes"), ("tls-replication", "yes")] }
        node.extra += [
            ("cluster-enabled", "yes"), ("cluster-config-file", "nodes.conf"),
            ("cluster-node-timeout", "\(options.nodeTimeout.wholeMilliseconds)"), ("cluster-port", "\(busPort)"),
        ]
        if let password = node.password { node.extra.append(("masterauth", password)) }
        if options.partitionable { node.sourceAddress = "127.0.0.\(10 + index)" }
        return node
    }

    /// With ``Options/partitionable``, puts proxies in front of `node` and has it announce them.
    private func interpose(_ node: RedisServer, busPort: Int) async throws {
        guard options.partitionable, let source = node.options.sourceAddress else { return }
        let client = try await FaultProxy.start(forwardingTo: node.port)
        let bus: FaultProxy
        do {
            bus = try await FaultProxy.start(forwardingTo: busPort)
        } catch {
            await client.stop()
            throw error
        }
        proxies.withLockedValue { $0[node.port] = NodeProxies(client: client, bus: bus, source: source) }
        try await announce(node)
    }

    /// Has a partitionable node announce its proxies (again after a restart, which forgets it).
    private func announce(_ node: RedisServer) async throws {
        guard let own = proxies.withLockedValue({ $0[node.port] }) else { return }
        for (name, value) in [
            ("cluster-announce-ip", "127.0.0.1"), ("cluster-announce-port", "\(own.client.port)"),
            ("cluster-announce-bus-port", "\(own.bus.port)"),
        ] {
            _ = try await send(RESPCommand("CONFIG", "SET", .string(name), .string(value)), to: node)
        }
    }

    /// Restarts a node that was killed (``RedisServer/restart()``), behind its proxies again when
    /// the cluster is ``Options/partitionable``.
    public func restart(_ node: RedisServer) async throws {
        try await node.restart()
        try await announce(node)
    }

    /// Starts a primary with ``Options/replicasPerPrimary`` replicas, introduces them to the
    /// cluster (`CLUSTER MEET`, `CLUSTER REPLICATE`) and waits until every node knows them and the
    /// replicas are in sync: a primary without slots, to move slots to (``moveSlot(_:to:)``). The
    /// seeds (``seeds``, ``configuration``) stay the nodes the cluster was created with.
    public func addPrimary() async throws -> RedisServer {
        let primary = try await join()
        let primaryID = try await id(of: primary)
        for _ in 0..<options.replicasPerPrimary {
            let replica = try await join()
            _ = try await send(RESPCommand("CLUSTER", "REPLICATE", .string(primaryID)), to: replica)
        }
        try await waitUntilStable()
        return primary
    }

    /// Starts a cluster node and meets it into the cluster; waits until every node knows it and it
    /// knows every slot's owner (it answers `CLUSTERDOWN` until then).
    private func join() async throws -> RedisServer {
        let busPort = try RedisServer.freePort()
        let node = try await RedisServer.start(Self.nodeOptions(options, index: nodes.count, busPort: busPort))
        added.withLockedValue { $0.append(node) }
        try await interpose(node, busPort: busPort)
        let announcedBusPort = proxies.withLockedValue { $0[node.port]?.bus.port } ?? busPort
        _ = try await send(
            RESPCommand("CLUSTER", "MEET", "127.0.0.1", .integer(announcedPort(of: node)), .integer(announcedBusPort)), to: created[0])
        let id = try await id(of: node)
        try await pollUntil("every node to know \(node.address)") {
            for other in self.nodes where other.pid != nil {
                let known = try await self.send(RESPCommand("CLUSTER", "NODES"), to: other).string ?? ""
                guard known.contains(id) else { return false }
            }
            return try await self.send(RESPCommand("CLUSTER", "INFO"), to: node).string?.contains("cluster_state:ok") == true
        }
        return node
    }

    /// The seed addresses: the nodes the cluster was created with.
    public var seeds: [HiredisAddress] { created.map { announcedAddress(of: $0) } }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`.
    public var url: String { "redis+cluster://" + seeds.map(\.description).joined(separator: ",") }

    /// A client configuration for the cluster.
    public var configuration: HiredisConfiguration {
        var configuration = nodes[0].configuration
        configuration.topology = .cluster(seeds: seeds)
        return configuration
    }

    /// Starts the nodes, creates the cluster and waits until every node agrees on it.
    public static func start(_ options: Options = Options()) async throws -> RedisCluster {
        if options.partitionable, options.node.tls != nil {
            throw RedisServer.StartError(description: "a partitionable cluster is plaintext (its proxies forward bytes)")
        }
        var nodes: [RedisServer] = []
        var busPorts: [Int] = []
        var cluster: RedisCluster?
        do {
            for index in 0..<(options.primaries * (1 + options.replicasPerPrimary)) {
                busPorts.append(try RedisServer.freePort())
                nodes.append(try await RedisServer.start(nodeOptions(options, index: index, busPort: busPorts[index])))
            }
            let created = RedisCluster(nodes: nodes, options: options)
            cluster = created
            for (node, busPort) in zip(nodes, busPorts) { try await created.interpose(node, busPort: busPort) }
            let (status, output) = try await ChildProcess.run(
                RedisServer.findExecutable("redis-cli"),
                created.authentication + ["--cluster", "create"] + created.seeds.map(\.description)
                    + ["--cluster-replicas", "\(options.replicasPerPrimary)", "--cluster-yes"])
            guard status == 0 else {
                throw RedisServer.StartError(description: "redis-cli --cluster create failed: \(output)")
            }
            try await created.waitUntilStable()
            return created
        } catch {
            if let cluster { await cluster.stop() } else { for node in nodes { await node.stop() } }
            throw error
        }
    }

    /// Starts a cluster, runs `body`, and stops every node, also when `body` throws.
    public static func with<T: Sendable>(_ options: Options = Options(), _ body: (RedisCluster) async throws -> T) async throws -> T {
        try await withStarted(try await start(options), stop: { await $0.stop() }, body)
    }

    /// Stops every node and removes their files.
    public func stop() async {
        for node in nodes { await node.stop() }
        for proxies in proxies.withLockedValue({ Array($0.values) }) {
            await proxies.client.stop()
            await proxies.bus.stop()
        }
    }

    /// redis-cli's arguments to reach the nodes: the password, and TLS with the client's certificate.
    private var authentication: [String] {
        var arguments = options.node.password.map { ["-a", $0, "--no-auth-warning"] } ?? []
        if let tls = options.node.tls {
            arguments += ["--tls", "--cacert", tls.caFile, "--cert", tls.clientCertificateFile, "--key", tls.clientKeyFile]
        }
        return arguments
    }

    // MARK: Asking the nodes

    /// Sends one command to one node over a connection of its own.
    public func send(_ command: RESPCommand, to node: RedisServer) async throws -> RESPReply {
        try await node.send(command)
    }

    private func info(_ node: RedisServer, _ section: String) async throws -> [String: String] {
        RedisInfo(try await send(RESPCommand("INFO", .string(section)), to: node).string ?? "").fields
    }

    /// A node's cluster id.
    public func id(of node: RedisServer) async throws -> String {
        guard let id = try await send(RESPCommand("CLUSTER", "MYID"), to: node).string else {
            throw RedisServer.StartError(description: "CLUSTER MYID gave no id")
        }
        return id
    }

    /// The nodes that are primaries now (running ones only).
    public func primaries() async throws -> [RedisServer] {
        var primaries: [RedisServer] = []
        for node in nodes where node.pid != nil {
            if try await info(node, "replication")["role"] == "master" { primaries.append(node) }
        }
        return primaries
    }

    /// The primary serving `slot` according to a running node (other than `excluded`: one cut
    /// off by a partition still claims its slots).
    public func primary(forSlot slot: Int, excluding excluded: RedisServer? = nil) async throws -> RedisServer {
        for node in nodes where node.pid != nil && node !== excluded {
            let shards = try await send(RESPCommand("CLUSTER", "SLOTS"), to: node).array ?? []
            for shard in shards {
                guard let range = shard.array, range.count >= 3, let low = range[0].int, let high = range[1].int,
                    (low...high).contains(slot), let port = range[2].array?[1].int
                else { continue }
                if let owner = self.node(at: port) { return owner }
            }
        }
        throw RedisServer.StartError(description: "no node serves slot \(slot)")
    }

    /// A running replica of `primary`.
    public func replica(of primary: RedisServer) async throws -> RedisServer {
        for node in nodes where node.pid != nil && node !== primary {
            let replication = try await info(node, "replication")
            if replication["role"] == "slave", let port = replication["master_port"].flatMap({ Int($0) }),
                self.node(at: port) === primary
            {
                return node
            }
        }
        throw RedisServer.StartError(description: "no replica of \(primary.address)")
    }

    // MARK: Faults and changes

    /// A manual failover: `primary`'s replica takes over once it has all of its writes
    /// (`CLUSTER FAILOVER`); waits until the cluster agrees.
    @discardableResult
    public func failover(_ primary: RedisServer) async throws -> RedisServer {
        let replica = try await replica(of: primary)
        _ = try await send(RESPCommand("CLUSTER", "FAILOVER"), to: replica)
        try await pollUntil("\(replica.address) to become a primary") {
            try await self.info(replica, "replication")["role"] == "master"
        }
        try await waitUntilStable()
        return replica
    }

    /// Kills `primary` (SIGKILL) and waits until its replica has been promoted by the cluster's
    /// own failure detection; returns the new primary. The killed node stays down
    /// (``RedisServer/restart()`` brings it back as a replica).
    /// `killed` runs once the process is dead (to start a clock of unavailability, say).
    @discardableResult
    public func killPrimary(_ primary: RedisServer, killed: () -> Void = {}) async throws -> RedisServer {
        let replica = try await replica(of: primary)
        await primary.kill()
        killed()
        try await pollUntil("\(replica.address) to be promoted") {
            try await self.info(replica, "replication")["role"] == "master"
        }
        try await waitUntilStable()
        return replica
    }

    /// Cuts `node` off, as a broken network would, from everyone: clients, its primary or its
    /// replicas, and the other nodes' cluster bus (needs ``Options/partitionable``). The node
    /// keeps running and the bytes sent to or by it are held, not dropped with a reset. A primary
    /// cut off longer than ``Options/nodeTimeout`` is failed over by the others; after
    /// ``heal(_:)`` it learns so and follows the promoted replica. Commands from this harness
    /// (``send(_:to:)``) still reach it.
    public func partition(_ node: RedisServer) throws {
        try setPartitioned(node, true)
    }

    /// Ends ``partition(_:)``: what was held goes on, and new connections pass.
    public func heal(_ node: RedisServer) throws {
        try setPartitioned(node, false)
    }

    private func setPartitioned(_ node: RedisServer, _ cut: Bool) throws {
        let all = proxies.withLockedValue { $0 }
        guard let own = all[node.port] else {
            throw RedisServer.StartError(description: "\(node.address) has no proxies: partitions need Options.partitionable")
        }
        for (port, other) in all where port != node.port {
            other.client.setIsolated(own.source, cut)
            other.bus.setIsolated(own.source, cut)
        }
        own.client.mode = cut ? .blackhole : .pass
        own.bus.mode = cut ? .blackhole : .pass
    }

    /// Begins moving `slot` to `target` and moves its keys (only `keys`, when given), without
    /// handing the slot over: while the migration is open the source answers `ASK` for every key
    /// of the slot it does not hold.
    public func beginMigration(ofSlot slot: Int, to target: RedisServer, moving keys: [String]? = nil) async throws -> SlotMigration {
        let source = try await primary(forSlot: slot)
        let sourceID = try await id(of: source)
        let targetID = try await id(of: target)
        _ = try await send(RESPCommand("CLUSTER", "SETSLOT", .integer(slot), "IMPORTING", .string(sourceID)), to: target)
        _ = try await send(RESPCommand("CLUSTER", "SETSLOT", .integer(slot), "MIGRATING", .string(targetID)), to: source)
        var chosen = keys
        while true {
            let keys: [RESPReply]
            if let some = chosen {
                keys = some.map { .bulkString(ByteBuffer(string: $0)) }
                chosen = []
            } else {
                keys = try await send(RESPCommand("CLUSTER", "GETKEYSINSLOT", .integer(slot), .integer(500)), to: source).array ?? []
            }
            if keys.isEmpty { break }
            var migrate = RESPCommand("MIGRATE", "127.0.0.1", .integer(target.port), "", .integer(0), .integer(5000))
            if let password = options.node.password { migrate.arguments += ["AUTH", .string(password)] }
            migrate.arguments.append("KEYS")
            migrate.arguments += keys.compactMap { $0.string.map { .string($0) } }
            _ = try await send(migrate, to: source)
        }
        return SlotMigration(slot: slot, source: source, target: target)
    }

    /// Hands a migrated slot to its target on every node, once each (the target first, then the
    /// source, as `redis-cli --cluster reshard` does). A second `SETSLOT NODE` on the new owner
    /// would make it drop the slot's shard-channel subscribers again.
    public func finish(_ migration: SlotMigration) async throws {
        let targetID = try await id(of: migration.target)
        let others = nodes.filter { $0 !== migration.target && $0 !== migration.source }
        for node in [migration.target, migration.source] + others where node.pid != nil {
            _ = try? await send(RESPCommand("CLUSTER", "SETSLOT", .integer(migration.slot), "NODE", .string(targetID)), to: node)
        }
        try await waitUntilStable()
    }

    /// Moves `slot` to `target` (keys included).
    public func moveSlot(_ slot: Int, to target: RedisServer) async throws {
        try await finish(try await beginMigration(ofSlot: slot, to: target))
    }

    /// Waits until every running node says the cluster is ok, knows every slot, and every replica
    /// is in sync with its primary.
    public func waitUntilStable() async throws {
        try await pollUntil("the cluster to be stable") {
            var owners: Set<String> = []
            for node in self.nodes where node.pid != nil {
                let info = try await self.send(RESPCommand("CLUSTER", "INFO"), to: node).string ?? ""
                guard info.contains("cluster_state:ok"), info.contains("cluster_slots_assigned:16384") else { return false }
                let replication = try await self.info(node, "replication")
                if replication["role"] == "slave", replication["master_link_status"] != "up" { return false }
                // Every node must agree on who serves the first slot of each shard.
                let slots = try await self.send(RESPCommand("CLUSTER", "SLOTS"), to: node).array ?? []
                owners.insert(
                    slots.map { "\($0.array?[0].int ?? -1)-\($0.array?[2].array?[1].int ?? -1)" }.sorted().joined(separator: ","))
            }
            return owners.count == 1
        }
    }

}
