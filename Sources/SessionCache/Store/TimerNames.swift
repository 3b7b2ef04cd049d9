import Synchronization

/// The timer key of recently used sessions, so that a touch is one cheap function on that key
/// (`touch_timer`) instead of a read of the session first.
///
/// It cannot make a touch wrong: the timer's name carries the session's idle timeout and absolute
/// deadline, so an entry made before a timeout-mode change (which renames the timer) names a key
/// that no longer exists and the touch falls back to the full path; a session that ended has no
/// timer either. Entries are dropped after `maximumAge` (of this process's monotonic clock), which
/// without an expiry listener is a quarter of the data grace: the full path then pushes the data's
/// TTL out, so the data always outlives the timer.
final class TimerNames: Sendable {
    private struct Entry {
        let key: String
        let learned: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let maximumAge: Duration
    private let capacity: Int

    init(maximumAge: Duration, capacity: Int = 100_000) {
        self.maximumAge = maximumAge
        self.capacity = capacity
    }

    /// The timer key of session `id`, if learned recently.
    func key(for id: String) -> String? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[id] else { return nil }
            if now - entry.learned > maximumAge {
                entries[id] = nil
                return nil
            }
            return entry.key
        }
    }

    func remember(_ key: String, for id: String) {
        let entry = Entry(key: key, learned: .now)
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
