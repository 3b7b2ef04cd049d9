/// Tells work that it must stop because what it relied on is gone (a claim or lease was lost), and
/// runs work racing against that and a timeout.
final class LostSignal: Sendable {
    /// How a raced piece of work ended.
    enum Outcome<Value: Sendable>: Sendable {
        case finished(Result<Value, any Error>)
        case timedOut
        /// The signal fired: the work was cancelled.
        case lost
        /// The work ignored its cancellation past the grace: no longer waited for.
        case abandoned
    }

    private struct State {
        var fired = false
        /// Cancels each race in progress, by race.
        var running: [UInt64: @Sendable () -> Void] = [:]
        var next: UInt64 = 0
    }

    private let state = LockedState(State())

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
    /// it to end (a hook is never run twice at once), but not for ever: work that ignores its
    /// cancellation for `stopGrace` after the timeout is abandoned (it may go on running; the
    /// caller's slot is free again). One task per race: an expiry listener runs one per hook.
    func race<Value: Sendable>(
        timeout: Duration, stopGrace: Duration, deadlines: HookDeadlines, _ body: @escaping @Sendable () async throws -> Value
    ) async -> Outcome<Value> {
        if isLost { return .lost }
        let handoff = Handoff<Value>()
        let work = Task {
            do {
                handoff.finish(.success(try await body()))
            } catch {
                handoff.finish(.failure(error))
            }
        }
        let id = state.withLock { state -> UInt64? in
            if state.fired { return nil }
            state.next += 1
            state.running[state.next] = { work.cancel() }
            return state.next
        }
        if id == nil { work.cancel() }
        let timedOut = Flag()
        let timer = deadlines.add(.now + timeout) {
            timedOut.set()
            work.cancel()
        }
        let abandon = deadlines.add(.now + timeout + stopGrace) { handoff.abandon() }
        let result = await withTaskCancellationHandler {
            await handoff.wait()
        } onCancel: {
            work.cancel()
            // The deadlines may stop with the caller (the listener cancelled as a whole): the grace
            // is kept without them too.
            Task {
                try? await Task.sleep(for: stopGrace)
                handoff.abandon()
            }
        }
        deadlines.remove(timer)
        deadlines.remove(abandon)
        // Not registered, or removed by fire(): the signal fired before or while the work ran.
        let registered = id.map { id in state.withLock { $0.running.removeValue(forKey: id) != nil } } ?? false
        // Abandoned first: such work may still run, whatever else happened.
        guard let result else { return .abandoned }
        guard registered else { return .lost }
        if case .failure = result, timedOut.isSet { return .timedOut }
        return .finished(result)
    }
}

/// A raced work's result on its way to the one caller waiting for it, unless the caller stopped
/// waiting first (then it gets nil, and a late result is dropped).
private final class Handoff<Value: Sendable>: Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<Result<Value, any Error>?, Never>)
        case finished(Result<Value, any Error>)
        case abandoned
        case delivered
    }

    private let state = LockedState(State.idle)

    func finish(_ result: Result<Value, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Result<Value, any Error>?, Never>? in
            switch state {
            case .idle:
                state = .finished(result)
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .finished, .abandoned, .delivered:
                return nil
            }
        }
        waiter?.resume(returning: result)
    }

    func abandon() {
        let waiter = state.withLock { state -> CheckedContinuation<Result<Value, any Error>?, Never>? in
            switch state {
            case .idle:
                state = .abandoned
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .finished, .abandoned, .delivered:
                return nil
            }
        }
        waiter?.resume(returning: nil)
    }

    func wait() async -> Result<Value, any Error>? {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Result<Value, any Error>?? in
                switch state {
                case .idle:
                    state = .waiting(continuation)
                    return .none
                case .finished(let result):
                    state = .delivered
                    return .some(result)
                case .abandoned, .delivered:
                    state = .delivered
                    return .some(nil)
                case .waiting:
                    preconditionFailure("a raced work's result has one waiter")
                }
            }
            if let now { continuation.resume(returning: now) }
        }
    }
}
