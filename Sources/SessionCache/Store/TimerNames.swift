import HiredisNIO
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
        let idleMilliseconds: Int
        let deadline: Int
        /// Redis's clock (ms) when the entry was learnt, and this process's monotonic clock then.
        let redisTime: Int
        let learned: ContinuousClock.Instant
    }

    /// How much later than sent a PEXPIRE may run (a Redis stall) before it could keep a session
    /// past its absolute deadline. Functions and the expiry listener end such a session anyway.
    static let safetyMargin: Duration = .seconds(60)

    /// Entries in shards by the id's last character (random), so that callers on several
    /// threads seldom wait for one another's lock.
    private let shards: [Shard]
    private let maximumAge: Duration
    /// The bound of each shard.
    private let shardCapacity: Int

    init(maximumAge: Duration, capacity: Int = 100_000) {
        self.maximumAge = maximumAge
        self.shards = (0..<16).map { _ in Shard() }
        self.shardCapacity = max(1, capacity / 16)
    }

    private final class Shard: Sendable {
        let entries = Mutex<[String: Entry]>([:])
    }

    private func shard(_ id: String) -> Shard {
        shards[Int(id.utf8.last ?? 0) & 15]
    }

    /// The plain `PEXPIRE <timer> <idle>` to send, or nil when the function must run.
    func fastTouch(for id: String) -> RESPCommand? {
        let now = ContinuousClock.now
        return shard(id).entries.withLock { entries in
            guard let entry = entries[id] else { return nil }
            let elapsed = now - entry.learned
            if elapsed > maximumAge {
                entries[id] = nil
                return nil
            }
            // The latest Redis's clock can show when the PEXPIRE runs, allowing for the margin.
            let latest = entry.redisTime + (elapsed + Self.safetyMargin).wholeMilliseconds
            guard latest + entry.idleMilliseconds <= entry.deadline else { return nil }
            return entry.touch
        }
    }

    /// Remembers a session's timer as a reply at Redis time `redisTime` (ms) named it.
    func remember(_ key: String, for id: String, redisTime: Int, keyspace: SessionKeyspace) {
        guard let timing = keyspace.timing(ofTimer: key) else { return }
        let entry = Entry(
            touch: RESPCommand("PEXPIRE", .string(key), .integer(timing.idleMilliseconds)), idleMilliseconds: timing.idleMilliseconds,
            deadline: timing.deadline, redisTime: redisTime, learned: .now)
        shard(id).entries.withLock { entries in
            if entries.count >= shardCapacity, entries[id] == nil {
                // Bounded: drop the old entries, or everything when none is old.
                let horizon = ContinuousClock.now - maximumAge
                entries = entries.filter { $0.value.learned > horizon }
                if entries.count >= shardCapacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[id] = entry
        }
    }

    func forget(_ id: String) {
        _ = shard(id).entries.withLock { $0.removeValue(forKey: id) }
    }
}
