/// A counting semaphore for tasks: at most `count` holders at once, the others wait in order.
final class Limiter: Sendable {
    private struct Watcher {
        let atLeast: Int
        let continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// Waiting for some slots to be free, without taking them, by id.
        var watchers: [UInt64: Watcher] = [:]
        var nextWatcher: UInt64 = 0

        var free: Int { max(0, available - waiters.count) }
    }

    private let state: LockedState<State>

    init(_ count: Int) {
        state = LockedState(State(available: max(1, count)))
    }

    /// How many could acquire at once now.
    var available: Int { state.withLock { $0.free } }

    /// How many wait for free slots without taking them (for tests).
    var watching: Int { state.withLock { $0.watchers.count } }

    /// Returns when at least one slot is free (without taking it).
    func waitUntilAvailable() async {
        await waitUntilAvailable(atLeast: 1)
    }

    /// Returns when at least `count` slots are free (without taking them), or after `timeout`.
    func waitUntilAvailable(atLeast count: Int, atMost timeout: Duration) async {
        if available >= count { return }
        _ = await waiting(atMost: timeout) { await self.waitUntilAvailable(atLeast: count) }
    }

    /// Returns when at least `count` slots are free, or when the task is cancelled.
    private func waitUntilAvailable(atLeast count: Int) async {
        let id = state.withLock { state in
            state.nextWatcher += 1
            return state.nextWatcher
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state in
                    if state.free >= count || Task.isCancelled { return true }
                    state.watchers[id] = Watcher(atLeast: count, continuation: continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.watchers.removeValue(forKey: id) }?.continuation.resume()
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
                if state.watchers.isEmpty { return (nil, []) }
                let free = state.free
                let ready = state.watchers.filter { $0.value.atLeast <= free }
                for id in ready.keys { state.watchers[id] = nil }
                return (nil, ready.values.map(\.continuation))
            }
            return (state.waiters.removeFirst(), [])
        }
        waiter?.resume()
        for watcher in watchers { watcher.resume() }
    }
}
