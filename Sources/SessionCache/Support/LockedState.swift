import NIOConcurrencyHelpers

/// State behind a lock, used like `Synchronization.Mutex` (`withLock`), on `NIOLock`
/// (`pthread_mutex`).
///
/// On Linux, Mutex locks with a futex that ThreadSanitizer does not see, so every access under a
/// Mutex from two threads is reported as a race (scripts/sanitize-suppressions/repro-mutex.swift),
/// which buries real reports. The expiry listener, the locks and their helpers keep their shared
/// state here instead, so that `scripts/sanitize thread` checks them. (The two hot paths,
/// `TimerNames` and `SecureRandom`, keep Mutex and a named suppression.)
final class LockedState<Value: Sendable>: Sendable {
    private let box: NIOLockedValueBox<Value>

    init(_ value: Value) {
        box = NIOLockedValueBox(value)
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try box.withLockedValue(body)
    }
}
