import Foundation

/// Why a session ended.
public enum ExpiryReason: String, Sendable, Hashable, Codable {
    /// Idle longer than its timeout.
    case idleTimeout = "idle_timeout"
    /// Past its absolute lifetime.
    case absoluteLifetime = "absolute_lifetime"
    /// Deleted explicitly (``SessionStore/delete(_:)`` with ``SessionStoreConfiguration/cleanupHooks``).
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
    /// When it was due to end, as far as the store knows: the last recorded activity plus the
    /// idle timeout, or the absolute deadline. (A session kept alive by cached touches recorded its
    /// last activity in its timer, which is gone; then this is earlier than the real expiry.)
    public var expiredAt: Date
    /// How many times the hook was started for this session before (0 on the first run; more when
    /// an instance died in the middle of the hook, or the hook threw).
    public var attempt: Int
}

/// What the warning hook receives: a session about to expire for idleness.
public struct ExpiryWarning: Sendable, Hashable {
    /// The session as it is now.
    public var session: Session
    /// How long it has left.
    public var remaining: Duration
}
