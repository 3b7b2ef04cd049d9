import Foundation

/// Why a session ended.
public enum ExpiryReason: String, Sendable, Hashable, Codable {
    /// Idle longer than its timeout.
    case idleTimeout = "idle_timeout"
    /// Past its absolute lifetime.
    case absoluteLifetime = "absolute_lifetime"
    /// Deleted explicitly (``SessionStore/delete(_:)`` or ``SessionStore/deleteAll(user:)`` with
    /// ``SessionStoreConfiguration/expiryListener``).
    case deleted
}

/// What a cleanup hook receives: the session as it was when it ended.
public struct ExpiredSession: Sendable, Hashable {
    /// The session (its data as it was; ``Session/state`` is its last state).
    public var session: Session
    /// Its recent messages.
    public var messages: [SessionMessage]
    /// Why it ended.
    public var reason: ExpiryReason
    /// When it ended (Redis's clock): its last activity plus the idle timeout, its absolute
    /// deadline, or when it was deleted. Touches are recorded in the timer, which is gone when the
    /// session ends; the listener copies them into the session whenever it finds the session alive
    /// at its expected end, so this is exact unless the listener was late by more than the session's
    /// last idle period.
    public var expiredAt: Date
    /// How many times this session was claimed before (0 on the first run; more when an instance
    /// died in the middle of the hook, or it gave up on a hook that kept failing).
    public var attempt: Int
}

/// What the warning hook receives: a session about to expire for idleness.
public struct ExpiryWarning: Sendable, Hashable {
    /// The session as it is now.
    public var session: Session
    /// How long it has left.
    public var remaining: Duration
}
