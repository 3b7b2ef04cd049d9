import Synchronization

/// What a full touch learnt about a session's timing, kept briefly so that the next touches can
/// be one command instead of a script.
///
/// A touch within ``SessionStoreConfiguration/touchCacheLifetime`` of a full one, that needs
/// neither the absolute-deadline cap nor a refresh of the data keys' TTL, is
/// `SET <alive> <now> XX PX <idle>`: atomic by itself; XX never revives a missing timer, so a
/// session deleted, rotated or expired elsewhere still answers not-found. The one thing a cached
/// entry can miss is a timeout-mode change made by another instance, which this instance's
/// touches then honour within the cache lifetime.
final class TouchCache: Sendable {
    struct Entry: Sendable {
        let idleMilliseconds: Int
        let deadline: Int
        let dataUntil: Int
        let validUntil: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let lifetime: Duration
    private let capacity: Int

    init(lifetime: Duration, capacity: Int = 100_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    var isEnabled: Bool { lifetime > .zero }

    /// The idle timeout to send with the single-command touch, or nil when the full script must run.
    func fastPathIdle(for id: String, now: Int, grace: Int) -> Int? {
        guard isEnabled, let entry = entries.withLock({ $0[id] }) else { return nil }
        let expires = now + entry.idleMilliseconds
        guard ContinuousClock.now < entry.validUntil, expires <= entry.deadline, expires + grace / 2 <= entry.dataUntil else {
            return nil
        }
        return entry.idleMilliseconds
    }

    func remember(_ id: String, idle: Int, deadline: Int, dataUntil: Int) {
        guard isEnabled else { return }
        let entry = Entry(idleMilliseconds: idle, deadline: deadline, dataUntil: dataUntil, validUntil: .now + lifetime)
        entries.withLock { entries in
            if entries.count >= capacity {
                // Bounded: drop the expired entries, or everything when none has expired.
                let now = ContinuousClock.now
                entries = entries.filter { $0.value.validUntil > now }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[id] = entry
        }
    }

    func forget(_ id: String) {
        guard isEnabled else { return }
        _ = entries.withLock { $0.removeValue(forKey: id) }
    }
}
