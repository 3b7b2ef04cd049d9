/// A granted lock: who holds it, and the fencing token its writes carry.
///
/// Pass it to the store's writes (`lease:`): a write whose fencing token is older than the newest
/// one issued for the session is refused (``SessionError/staleLease``), so a holder that paused past
/// its lease cannot overwrite the next holder's work.
public struct LockLease: Sendable, Hashable {
    /// The session.
    public let sessionID: String
    /// The tab, with ``SessionLockConfiguration/Policy/sessionPerTab``.
    public let tab: String?
    /// This acquisition's owner token: 128 random bits (per acquisition, not per thread or task).
    public let token: String
    /// Grows with every acquisition of the session's lock.
    public let fence: Int
}

/// What ``SessionLock`` throws.
public enum LockError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The session is not alive.
    case notFound
    /// The lock was not granted within the wait timeout.
    case timedOut
    /// The lease was lost while the holder worked (a renewal failed: it ran out, or another tab took
    /// it over); the holder's later fenced writes are refused.
    case leaseLost
    /// Redis failed.
    case redis(String)

    public var description: String {
        switch self {
        case .notFound: return "session not found or expired"
        case .timedOut: return "timed out waiting for the session lock"
        case .leaseLost: return "the session lock's lease was lost"
        case .redis(let text): return text
        }
    }
}
