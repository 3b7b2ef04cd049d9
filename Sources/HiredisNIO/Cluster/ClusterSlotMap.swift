/// Which primary serves each of the 16384 slots: a plain value, changed by a topology read and by
/// `MOVED` replies, unit-tested alone.
struct ClusterSlotMap: Sendable {
    /// Every node that served a slot since the last topology read; `slots` holds indexes into it.
    private var nodes: [String] = []
    /// How many slots each of `nodes` serves.
    private var owned: [Int] = []
    private var slots = [Int16](repeating: -1, count: HashSlot.count)
    /// Each primary's online replicas (addresses), from the last topology read.
    private(set) var replicas: [String: [String]] = [:]
    /// Incremented by every change, so that a router can tell whether its view is current.
    private(set) var version = 0

    /// The primaries: the nodes that serve a slot. A node whose last slot moved away (`MOVED`
    /// during a reshard, or to the replica that replaced it) is no primary any more.
    var primaries: [String] {
        zip(nodes, owned).compactMap { $0.1 > 0 ? $0.0 : nil }
    }

    /// Whether a topology was ever applied.
    var isKnown: Bool { version > 0 }

    /// The primary serving `slot`, nil when no node is known for it.
    func primary(forSlot slot: Int) -> String? {
        guard (0..<HashSlot.count).contains(slot) else { return nil }
        let index = slots[slot]
        return index < 0 ? nil : nodes[Int(index)]
    }

    /// The online replicas of the shard serving `slot`.
    func replicas(forSlot slot: Int) -> [String] {
        guard let primary = primary(forSlot: slot) else { return [] }
        return replicas[primary] ?? []
    }

    /// Every replica address known.
    var replicaAddresses: Set<String> { Set(replicas.values.joined()) }

    /// Replaces the map with `topology`; returns the primaries that appeared and disappeared.
    mutating func apply(_ topology: ClusterTopology) -> (added: [String], removed: [String]) {
        let old = Set(primaries)
        // No more nodes than slots (an index is an Int16): a reply naming more is cut short.
        nodes = Array(topology.primaries.prefix(HashSlot.count))
        owned = Array(repeating: 0, count: nodes.count)
        replicas = [:]
        for shard in topology.shards {
            let online = shard.replicas.filter(\.isOnline).map(\.address)
            if !online.isEmpty { replicas[shard.primary.address] = online }
        }
        slots = [Int16](repeating: -1, count: HashSlot.count)
        for (index, shard) in topology.shards.prefix(nodes.count).enumerated() {
            for range in shard.slots where range.lowerBound >= 0 && range.upperBound < HashSlot.count {
                for slot in range { slots[slot] = Int16(index) }
            }
        }
        // Counted from the map, not the ranges: shards that claim one slot twice (a reply that
        // does not add up) must not leave a primary that serves nothing.
        for index in slots where index >= 0 { owned[Int(index)] += 1 }
        version += 1
        let current = primaries
        return (current.filter { !old.contains($0) }, old.subtracting(current).sorted())
    }

    /// A `MOVED` reply: `slot` is served by `address` now. Returns whether `address` is a primary
    /// the map did not know (a pool must be made for it).
    mutating func moved(slot: Int, to address: String) -> Bool {
        guard (0..<HashSlot.count).contains(slot) else { return false }
        let previous = slots[slot]
        if previous >= 0, nodes[Int(previous)] == address { return false }
        version += 1
        if previous >= 0 { owned[Int(previous)] -= 1 }
        if let index = nodes.firstIndex(of: address) {
            let known = owned[index] > 0
            slots[slot] = Int16(index)
            owned[index] += 1
            return !known
        }
        nodes.append(address)
        owned.append(1)
        slots[slot] = Int16(nodes.count - 1)
        return true
    }
}
