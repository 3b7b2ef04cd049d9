import Synchronization

/// A counting semaphore for tasks: at most `count` holders at once, the others wait in order.
final class Limiter: Sendable {
    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// Waiting for a slot to be free, without taking it.
        var watchers: [CheckedContinuation<Void, Never>] = []
    }

    private let state: Mutex<State>

    init(_ count: Int) {
        state = Mutex(State(available: max(1, count)))
    }

    /// How many could acquire at once now.
    var available: Int { state.withLock { max(0, $0.available - $0.waiters.count) } }

    /// Returns when at least one slot is free (without taking it).
    func waitUntilAvailable() async {
        await withCheckedContinuation { continuation in
            let free = state.withLock { state in
                if state.available > state.waiters.count { return true }
                state.watchers.append(continuation)
                return false
            }
            if free { continuation.resume() }
        }
    }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let (waiter, watchers) = state.withLock { state -> (CheckedContinuation<Void, Never>?, [CheckedContinuation<Void, Never>]) in
            if state.waiters.isEmpty {
                state.available += 1
                defer { state.watchers = [] }
                return (nil, state.watchers)
            }
            return (state.waiters.removeFirst(), [])
        }
        waiter?.resume()
        for watcher in watchers { watcher.resume() }
    }
}
