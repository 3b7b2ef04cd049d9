/// Which primary serves each of the 16384 slots: a plain value, changed by a topology read and by
/// `MOVED` replies, unit-tested alone.
struct ClusterSlotMap: Sendable {
    /// The primaries' addresses; `slots` holds indexes into it.
    private(set) var primaries: [String] = []
    private var slots = [Int16](repeating: -1, count: HashSlot.count)
    /// Each primary's online replicas (addresses), from the last topology read.
    private(set) var replicas: [String: [String]] = [:]
    /// Incremented by every change, so that a router can tell whether its view is current.
    private(set) var version = 0

    /// Whether a topology was ever applied.
    var isKnown: Bool { version > 0 }

    /// The primary serving `slot`, nil when no node is known for it.
    func primary(forSlot slot: Int) -> String? {
        let index = slots[slot]
        return index < 0 ? nil : primaries[Int(index)]
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
        primaries = topology.primaries
        replicas = [:]
        for shard in topology.shards {
            let online = shard.replicas.filter(\.isOnline).map(\.address)
            if !online.isEmpty { replicas[shard.primary.address] = online }
        }
        slots = [Int16](repeating: -1, count: HashSlot.count)
        for (index, shard) in topology.shards.enumerated() {
            for range in shard.slots where range.lowerBound >= 0 && range.upperBound < HashSlot.count {
                for slot in range { slots[slot] = Int16(index) }
            }
        }
        version += 1
        let new = Set(primaries)
        return (primaries.filter { !old.contains($0) }, old.subtracting(new).sorted())
    }

    /// A `MOVED` reply: `slot` is served by `address` now. Returns whether `address` is a primary
    /// the map did not know (a pool must be made for it).
    mutating func moved(slot: Int, to address: String) -> Bool {
        guard (0..<HashSlot.count).contains(slot) else { return false }
        version += 1
        if let index = primaries.firstIndex(of: address) {
            slots[slot] = Int16(index)
            return false
        }
        primaries.append(address)
        slots[slot] = Int16(primaries.count - 1)
        return true
    }
}
