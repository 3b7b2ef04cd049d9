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
        let key: String
        let idleMilliseconds: Int
        let deadline: Int
        /// Redis's clock (ms) when the entry was learnt, and this process's monotonic clock then.
        let redisTime: Int
        let learned: ContinuousClock.Instant
    }

    /// How much later than sent a PEXPIRE may run (a Redis stall) before it could keep a session
    /// past its absolute deadline. Functions and the expiry listener end such a session anyway.
    static let safetyMargin: Duration = .seconds(60)

    private let entries = Mutex<[String: Entry]>([:])
    private let maximumAge: Duration
    private let capacity: Int

    init(maximumAge: Duration, capacity: Int = 100_000) {
        self.maximumAge = maximumAge
        self.capacity = capacity
    }

    /// The timer key and idle timeout to send a plain PEXPIRE with, or nil when the function must run.
    func fastTouch(for id: String) -> (key: String, idleMilliseconds: Int)? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[id] else { return nil }
            let elapsed = now - entry.learned
            if elapsed > maximumAge {
                entries[id] = nil
                return nil
            }
            // The latest Redis's clock can show when the PEXPIRE runs, allowing for the margin.
            let latest = entry.redisTime + (elapsed + Self.safetyMargin).wholeMilliseconds
            guard latest + entry.idleMilliseconds <= entry.deadline else { return nil }
            return (entry.key, entry.idleMilliseconds)
        }
    }

    /// Remembers a session's timer as a reply at Redis time `redisTime` (ms) named it.
    func remember(_ key: String, for id: String, redisTime: Int, keyspace: SessionKeyspace) {
        guard let timing = keyspace.timing(ofTimer: key) else { return }
        let entry = Entry(
            key: key, idleMilliseconds: timing.idleMilliseconds, deadline: timing.deadline, redisTime: redisTime, learned: .now)
        entries.withLock { entries in
            if entries.count >= capacity, entries[id] == nil {
                // Bounded: drop the old entries, or everything when none is old.
                let horizon = ContinuousClock.now - maximumAge
                entries = entries.filter { $0.value.learned > horizon }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[id] = entry
        }
    }

    func forget(_ id: String) {
        _ = entries.withLock { $0.removeValue(forKey: id) }
    }
}
