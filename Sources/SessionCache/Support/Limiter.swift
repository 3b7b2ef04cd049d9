import Synchronization

/// A counting semaphore for tasks: at most `count` holders at once, the others wait in order.
final class Limiter: Sendable {
    private let state: Mutex<(available: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) {
        state = Mutex((max(1, count), []))
    }

    /// How many could acquire at once now.
    var available: Int { state.withLock { max(0, $0.available - $0.waiters.count) } }

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
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume()
    }
}
