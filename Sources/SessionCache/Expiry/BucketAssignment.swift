/// Which buckets an expiry listener sweeps: rendezvous hashing over the registered listeners.
///
/// Every listener computes the same assignment from the same member list, with no coordination
/// beyond the registry: bucket `b` belongs to the member whose `score(member, b)` is highest. When
/// a member joins or leaves, only the buckets it wins or held move. During a change two listeners
/// may briefly sweep one bucket (harmless: claims are atomic) or none (for at most the time the
/// registry takes to notice, ``ExpiryListenerConfiguration/registrationLifetime``).
struct BucketAssignment: Sendable, Equatable {
    let buckets: Set<Int>

    init(me: String, members: [String], bucketCount: Int) {
        var members = members
        if !members.contains(me) { members.append(me) }
        let seeds = members.map { (member: $0, seed: Self.fnv1a($0)) }
        var mine = Set<Int>()
        for bucket in 0..<bucketCount {
            var best: (score: UInt64, member: String)?
            for (member, seed) in seeds {
                let score = Self.mix(seed ^ (UInt64(bucket) &* 0x9E37_79B9_7F4A_7C15))
                if let current = best, (current.score, current.member) >= (score, member) { continue }
                best = (score, member)
            }
            if best?.member == me { mine.insert(bucket) }
        }
        buckets = mine
    }

    private static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01B3
        }
        return hash
    }

    /// SplitMix64's finalizer: spreads the bits of the combined seed.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
