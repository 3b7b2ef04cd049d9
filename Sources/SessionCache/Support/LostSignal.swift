import Synchronization

/// Tells work that it must stop because what it relied on is gone (a claim or lease was lost), and
/// runs work racing against that and a timeout.
final class LostSignal: Sendable {
    /// How a raced piece of work ended.
    enum Outcome<Value: Sendable>: Sendable {
        case finished(Result<Value, any Error>)
        case timedOut
        /// The signal fired: the work was cancelled.
        case lost
    }

    private struct State {
        var fired = false
        /// Cancels each race in progress, by race.
        var running: [UInt64: @Sendable () -> Void] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    var isLost: Bool { state.withLock { $0.fired } }

    /// Fires the signal: every race in progress cancels its work.
    func fire() {
        let cancels = state.withLock { state in
            state.fired = true
            defer { state.running = [:] }
            return Array(state.running.values)
        }
        for cancel in cancels { cancel() }
    }

    /// Runs `body` in a task of its own, cancelled when the signal fires, when `timeout` passes (as
    /// `deadlines` sees it: its `run()` must be running) or when the caller is cancelled; waits for
    /// it to end either way (a hook is never run twice at once). One task per race: an expiry
    /// listener runs one per hook.
    func race<Value: Sendable>(
        timeout: Duration, deadlines: HookDeadlines, _ body: @escaping @Sendable () async throws -> Value
    ) async -> Outcome<Value> {
        if isLost { return .lost }
        let work = Task { try await body() }
        let id = state.withLock { state -> UInt64? in
            if state.fired { return nil }
            state.next += 1
            state.running[state.next] = { work.cancel() }
            return state.next
        }
        guard let id else {
            work.cancel()
            _ = await work.result
            return .lost
        }
        let timedOut = Flag()
        let timer = deadlines.add(.now + timeout) {
            timedOut.set()
            work.cancel()
        }
        let result = await withTaskCancellationHandler {
            await work.result
        } onCancel: {
            work.cancel()
        }
        deadlines.remove(timer)
        // Removed by fire(): the signal fired while the work ran.
        if state.withLock({ $0.running.removeValue(forKey: id) == nil }) { return .lost }
        if case .failure = result, timedOut.isSet { return .timedOut }
        return .finished(result)
    }
}
