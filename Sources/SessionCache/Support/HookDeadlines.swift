/// Ends work that outlives its time: one periodic check for every hook in progress instead of a
/// timer per hook. (An event-loop timer scheduled and cancelled from another thread wakes the loop
/// twice; at thousands of hooks a second that was about 6% of a listener's CPU.)
final class HookDeadlines: Sendable {
    private struct Entry {
        let deadline: ContinuousClock.Instant
        let expire: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var next: UInt64 = 0
    }

    private let state = LockedState(State())
    /// How often ``run()`` looks: a deadline is acted on at most this late.
    let resolution: Duration

    init(resolution: Duration) { self.resolution = resolution }

    /// The resolution for hooks that may run `timeout`: a twentieth of it, between 10 ms and 1 s.
    convenience init(forTimeout timeout: Duration) {
        self.init(resolution: min(max(timeout / 20, .milliseconds(10)), .seconds(1)))
    }

    /// Calls `expire` once `deadline` has passed, unless ``remove(_:)`` comes first.
    func add(_ deadline: ContinuousClock.Instant, _ expire: @escaping @Sendable () -> Void) -> UInt64 {
        state.withLock { state in
            state.next += 1
            state.entries[state.next] = Entry(deadline: deadline, expire: expire)
            return state.next
        }
    }

    func remove(_ id: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: id) }
    }

    /// Calls, once, every entry whose deadline is at or before `now`, and forgets it.
    func expire(asOf now: ContinuousClock.Instant) {
        let due = state.withLock { state -> [@Sendable () -> Void] in
            let ids = state.entries.compactMap { $0.value.deadline <= now ? $0.key : nil }
            return ids.compactMap { state.entries.removeValue(forKey: $0)?.expire }
        }
        for expire in due { expire() }
    }

    /// Checks every ``resolution`` until the task is cancelled.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: resolution)
            expire(asOf: .now)
        }
    }
}
