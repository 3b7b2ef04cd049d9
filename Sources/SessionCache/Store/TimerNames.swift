import HiredisNIO
import NIOCore
import Synchronization

/// What this instance learnt about recently used sessions' timers, so that a touch is one plain
/// command, `PEXPIRE <timer> <idle>`, instead of a function that reads the session first.
///
/// It cannot make a touch wrong:
/// - The timer's name carries the session's idle timeout and absolute deadline, so an entry made
///   before a timeout-mode change (which renames the timer) names a key that no longer exists, and
///   an ended session has no timer: PEXPIRE finds nothing, never revives anything, and the touch
///   falls back to the function.
/// - A plain PEXPIRE cannot cap the timer at the absolute deadline, so it is sent only while the
///   session is provably further than its idle timeout plus ``safetyMargin`` from that deadline.
///   The proof uses Redis's clock as the reply that taught the entry reported it, plus the time
///   elapsed since on this process's monotonic clock: the app server's wall clock plays no part.
///   Closer to the deadline, touches use the function, which caps exactly.
/// - Entries are dropped after `maximumAge` of monotonic time. Without an expiry listener that is a
///   quarter of the data grace: the function then pushes the data's TTL out, so the data always
///   outlives the timer.
final class TimerNames: Sendable {
    private struct Entry {
        /// The fast touch itself, `PEXPIRE <timer> <idle>`, built once: a touch sends it as is.
        let touch: RESPCommand
        /// Until when (this process's continuous clock, which counts time the host was suspended,
        /// as Redis's clock does) it may be sent: the earlier of the entry's maximum age and the
        /// last moment that keeps the session provably far enough from its deadline. Worked out
        /// once, so that a touch compares one instant.
        let fastUntil: ContinuousClock.Instant
        /// Its place in its shard's insertion order (see ``Shard``).
        let sequence: UInt64
    }

    /// How much later than sent a PEXPIRE may run (a Redis stall) before it could keep a session
    /// past its absolute deadline. Functions and the expiry listener end such a session anyway.
    static let safetyMargin: Duration = .seconds(60)

    /// Entries in shards by the id's last character (random), so that callers on several
    /// threads seldom wait for one another's lock.
    private let shards: [Shard]
    /// The maximum age in milliseconds, at most 2^50 (35,000 years).
    private let maximumAgeMilliseconds: Int
    /// The bound of each shard (0: the cache is off).
    private let shardCapacity: Int

    /// At most `capacity` entries (16 shards of `capacity / 16`), each about 300 bytes with its
    /// key and command: 100,000 entries hold about 30 MB.
    init(maximumAge: Duration, capacity: Int = 100_000) {
        self.maximumAgeMilliseconds = max(0, min(maximumAge, .milliseconds(1 << 50)).wholeMilliseconds)
        self.shards = (0..<16).map { _ in Shard() }
        self.shardCapacity = capacity <= 0 ? 0 : max(1, capacity / 16)
    }

    /// A shard's entries and their insertion order. At capacity the oldest entry leaves, one per
    /// new entry: no pause (a full clear made every next touch slow, a filter scanned them all).
    /// The order may name entries replaced or forgotten since (their sequence differs): they are
    /// skipped as they come, and the order is cut back to the capacity when it holds twice that.
    private final class Shard: Sendable {
        struct State {
            var entries: [String: Entry] = [:]
            var order = CircularBuffer<(id: String, sequence: UInt64)>()
            var nextSequence: UInt64 = 0

            mutating func insert(_ id: String, touch: RESPCommand, fastUntil: ContinuousClock.Instant, capacity: Int) {
                if entries[id] == nil {
                    while entries.count >= capacity, let oldest = order.popFirst() {
                        if entries[oldest.id]?.sequence == oldest.sequence { entries[oldest.id] = nil }
                    }
                }
                nextSequence &+= 1
                entries[id] = Entry(touch: touch, fastUntil: fastUntil, sequence: nextSequence)
                order.append((id, nextSequence))
                if order.count > 2 * capacity {
                    // Mostly stale names (forgotten or replaced entries): keep the newest.
                    while order.count > capacity, let oldest = order.popFirst() {
                        if entries[oldest.id]?.sequence == oldest.sequence { entries[oldest.id] = nil }
                    }
                }
            }
        }

        let state = Mutex(State())
    }

    /// How many entries are held (for tests).
    var count: Int { shards.reduce(0) { $0 + $1.state.withLock { $0.entries.count } } }
    /// How many names the shards' orders hold (for tests: bounded by twice the capacity).
    var orderCount: Int { shards.reduce(0) { $0 + $1.state.withLock { $0.order.count } } }

    /// The shard of an id: by the value (0-63) of its last base64url character, random and
    /// uniform, so that each shard takes 4 of the 64.
    private func shard(_ id: String) -> Shard {
        let character = id.utf8.last ?? 0
        let value: UInt8
        switch character {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = character &- UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): value = character &- UInt8(ascii: "a") &+ 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character &- UInt8(ascii: "0") &+ 52
        case UInt8(ascii: "-"): value = 62
        default: value = 63
        }
        return shards[Int(value & 15)]
    }

    /// The plain `PEXPIRE <timer> <idle>` to send, or nil when the function must run.
    func fastTouch(for id: String) -> RESPCommand? {
        let now = ContinuousClock.now
        return shard(id).state.withLock { state in
            guard let entry = state.entries[id] else { return nil }
            if now < entry.fastUntil { return entry.touch }
            // Too old, or too close to the deadline: the function runs, and teaches a new entry.
            state.entries[id] = nil
            return nil
        }
    }

    /// Remembers a session's timer as a reply at Redis time `redisTime` (ms) named it.
    func remember(_ key: String, for id: String, redisTime: Int, keyspace: SessionKeyspace) {
        // Names are ours, but a bad one must not trap in the arithmetic below: 2^50 ms is 35,000 years.
        guard let timing = keyspace.timing(ofTimer: key), (1..<(1 << 50)).contains(timing.idleMilliseconds),
            (0..<(1 << 50)).contains(timing.deadline), (0..<(1 << 50)).contains(redisTime)
        else { return }
        guard shardCapacity > 0 else { return }
        let learned = ContinuousClock.now
        // A PEXPIRE sent `elapsed` after now runs by Redis time redisTime + elapsed + margin at
        // the latest, and must not reach past the deadline: elapsed <= deadline - idle - margin -
        // redisTime.
        let farFor = timing.deadline - timing.idleMilliseconds - Self.safetyMargin.wholeMilliseconds - redisTime
        let touch = RESPCommand("PEXPIRE", .string(key), .integer(timing.idleMilliseconds))
        let fastUntil = learned + .milliseconds(max(0, min(farFor, maximumAgeMilliseconds)))
        let capacity = shardCapacity
        shard(id).state.withLock { $0.insert(id, touch: touch, fastUntil: fastUntil, capacity: capacity) }
    }

    func forget(_ id: String) {
        _ = shard(id).state.withLock { $0.entries.removeValue(forKey: id) }
    }
}
