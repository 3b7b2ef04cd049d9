import NIOCore
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

    /// Why a waiter was woken.
    private enum Wake: Sendable {
        case fired, timedOut, cancelled
    }

    private struct State {
        var fired = false
        var waiters: [UInt64: CheckedContinuation<Wake, Never>] = [:]
        var next: UInt64 = 0
    }

    private let state = Mutex(State())

    var isLost: Bool { state.withLock { $0.fired } }

    /// Fires the signal: every race in progress cancels its work.
    func fire() {
        let waiters = state.withLock { state in
            state.fired = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: .fired) }
    }

    /// Runs `body`, cancelling it when the signal fires or `timeout` passes (a timer on
    /// `eventLoop`: one task races the body, not two).
    func race<Value: Sendable>(
        timeout: Duration, on eventLoop: any EventLoop, _ body: @escaping @Sendable () async throws -> Value
    ) async -> Outcome<Value> {
        if isLost { return .lost }
        return await withTaskGroup(of: Outcome<Value>?.self) { group in
            group.addTask {
                do {
                    return .finished(.success(try await body()))
                } catch {
                    return .finished(.failure(error))
                }
            }
            group.addTask {
                switch await self.wait(timeout: timeout, on: eventLoop) {
                case .fired: return .lost
                case .timedOut: return .timedOut
                case .cancelled: return nil
                }
            }
            var outcome: Outcome<Value> = .lost
            while let next = await group.next() {
                if let next {
                    outcome = next
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
    }

    private func wait(timeout: Duration, on eventLoop: any EventLoop) async -> Wake {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        let resume: @Sendable (Wake) -> Void = { [self] wake in
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: wake)
        }
        let timer = eventLoop.scheduleTask(in: timeout.timeAmount) { resume(.timedOut) }
        defer { timer.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Wake, Never>) in
                let now = state.withLock { state -> Wake? in
                    if state.fired { return .fired }
                    if Task.isCancelled { return .cancelled }
                    state.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            resume(.cancelled)
        }
    }
}

extension Duration {
    /// The duration as NIO's `TimeAmount`.
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
