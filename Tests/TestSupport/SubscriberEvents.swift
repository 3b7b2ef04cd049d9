import HiredisNIO
import NIOConcurrencyHelpers
import NIOCore

/// A subscriber's events, read by a task of their own, awaited one at a time with a time limit:
/// a test whose event never comes fails after the limit instead of hanging. (Cancelling a task
/// that waits on an `AsyncStream` would end the stream, so a waiter is never cancelled.)
public final class SubscriberEvents: Sendable {
    private struct State {
        var events: [HiredisSubscriber.Event] = []
        var waiter: (id: Int, continuation: CheckedContinuation<HiredisSubscriber.Event?, Never>)?
        var nextID = 0
        var finished = false
    }

    private let state = NIOLockedValueBox(State())

    public init(_ subscriber: HiredisSubscriber) {
        Task { [state] in
            for await event in subscriber.events {
                let waiter = state.withLockedValue { state in
                    guard let waiter = state.waiter else {
                        state.events.append(event)
                        return nil as CheckedContinuation<HiredisSubscriber.Event?, Never>?
                    }
                    state.waiter = nil
                    return waiter.continuation
                }
                waiter?.resume(returning: event)
            }
            let waiter = state.withLockedValue { state in
                state.finished = true
                defer { state.waiter = nil }
                return state.waiter?.continuation
            }
            waiter?.resume(returning: nil)
        }
    }

    /// The next event, or nil when none came within `timeout` (or the events ended).
    public func next(within timeout: Duration) async -> HiredisSubscriber.Event? {
        await withCheckedContinuation { (continuation: CheckedContinuation<HiredisSubscriber.Event?, Never>) in
            let (ready, id): (HiredisSubscriber.Event??, Int) = state.withLockedValue { state in
                if !state.events.isEmpty { return (.some(state.events.removeFirst()), 0) }
                if state.finished { return (.some(nil), 0) }
                state.nextID += 1
                state.waiter = (state.nextID, continuation)
                return (nil, state.nextID)
            }
            if let ready {
                continuation.resume(returning: ready)
                return
            }
            Task { [state] in
                try? await Task.sleep(for: timeout)
                let expired = state.withLockedValue { state in
                    guard let waiter = state.waiter, waiter.id == id else {
                        return nil as CheckedContinuation<HiredisSubscriber.Event?, Never>?
                    }
                    state.waiter = nil
                    return waiter.continuation
                }
                expired?.resume(returning: nil)
            }
        }
    }

    /// The next message, skipping `.resubscribed` notices; nil when none came within `timeout`.
    public func nextMessage(within timeout: Duration) async -> (channel: String, pattern: String?, payload: String)? {
        let start = ContinuousClock.now
        while case let left = timeout - (ContinuousClock.now - start), left > .zero {
            switch await next(within: left) {
            case .message(let channel, let pattern, let payload)?: return (channel, pattern, String(buffer: payload))
            case .resubscribed?, .gap?: continue
            case nil: return nil
            }
        }
        return nil
    }
}
