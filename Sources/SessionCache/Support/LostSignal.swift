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

    private let state = Mutex<(fired: Bool, waiters: [UInt64: CheckedContinuation<Void, Never>], next: UInt64)>((false, [:], 0))

    var isLost: Bool { state.withLock { $0.fired } }

    /// Fires the signal: every race in progress cancels its work.
    func fire() {
        let waiters = state.withLock { state in
            state.fired = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Runs `body`, cancelling it when the signal fires or `timeout` passes.
    func race<Value: Sendable>(timeout: Duration, _ body: @escaping @Sendable () async throws -> Value) async -> Outcome<Value> {
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
                try? await Task.sleep(for: timeout)
                return Task.isCancelled ? nil : .timedOut
            }
            group.addTask {
                await self.waitUntilFired()
                return Task.isCancelled ? nil : .lost
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

    private func waitUntilFired() async {
        let id = state.withLock { state in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
