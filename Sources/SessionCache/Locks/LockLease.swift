import HiredisNIO

/// A granted lock: who holds it, and the fencing token its writes carry.
///
/// Pass it to the store's writes (`lease:`): a write made under a lease that is no longer held is
/// refused atomically (``SessionError/staleLease``), so a holder that paused past its lease cannot
/// overwrite the next holder's work.
public struct LockLease: Sendable, Hashable {
    /// The session.
    public let sessionID: String
    /// The tab, with ``SessionLockConfiguration/Policy/sessionPerTab``.
    public let tab: String?
    /// This acquisition's owner token: 144 random bits (per acquisition, not per thread or task).
    public let token: String
    /// The fencing token: Redis's clock in microseconds at the grant, or one more than the last
    /// token any lock of the session was granted, whichever is larger. While the session lives,
    /// the tokens of its locks strictly increase, also across a failover or restart that lost
    /// nothing (see <doc:SessionLocks> for exactly what holds, and without replica acknowledgement). Pass it to other
    /// systems the holder writes to, so that they can refuse writes with an older token.
    public let fence: Int
}

/// What ``SessionLock`` throws.
public enum LockError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The session id is not one the store issues.
    case notFound
    /// A tab name is empty, longer than 64 bytes, or not made of letters, digits, `-` and `_`.
    case invalidTab
    /// The lock was not granted within the wait timeout.
    case timedOut
    /// The lease was lost while the holder worked (a renewal failed: it ran out, or another tab took
    /// it over); the holder's later fenced writes are refused.
    case leaseLost
    /// Redis failed (unreachable, timed out, or refused the command): the underlying error says
    /// which, and whether the command may have run.
    case redis(HiredisError)
    /// The store could not do what the lock needed (a reply it did not expect, a refused input).
    case store(SessionError)
    /// The lock was granted on the primary but too few replicas confirmed it
    /// (``SessionStoreConfiguration/replicaAcknowledgement``); it has been given back.
    case notReplicated

    public var description: String {
        switch self {
        case .notFound: return "malformed session id"
        case .invalidTab: return "invalid tab name"
        case .timedOut: return "timed out waiting for the session lock"
        case .leaseLost: return "the session lock's lease was lost"
        case .redis(let error): return "\(error)"
        case .store(let error): return "\(error)"
        case .notReplicated: return "the session lock was not confirmed by enough replicas"
        }
    }
}

extension LockError {
    /// What a lock operation throws for an error from below: Redis's and the store's as lock
    /// errors; cancellation and lock errors as they are.
    static func from(_ error: any Error) -> any Error {
        switch error {
        case let error as LockError: error
        case let error as HiredisError: LockError.redis(error)
        case SessionError.redis(let error): LockError.redis(error)
        case SessionError.notReplicated: LockError.notReplicated
        case let error as SessionError: LockError.store(error)
        default: error
        }
    }
}
