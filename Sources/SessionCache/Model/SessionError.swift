import HiredisNIO

/// What the session store throws. Every case means nothing was written.
public enum SessionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The id is not one the store issues (43 URL-safe base64 characters).
    case invalidID
    /// The session does not exist, expired, or was deleted or rotated.
    case notFound
    /// A metadata value is larger than ``SessionStoreConfiguration/Limits/maxMetadataValueBytes``.
    case metadataValueTooLarge(key: String, bytes: Int, limit: Int)
    /// A metadata key is empty or longer than 200 bytes.
    case invalidMetadataKey(String)
    /// A message is larger than ``SessionStoreConfiguration/Limits/maxMessageBytes``.
    case messageTooLarge(bytes: Int, limit: Int)
    /// The write would take the session past ``SessionStoreConfiguration/Limits/maxSessionBytes``.
    case sessionTooLarge(bytes: Int, limit: Int)
    /// The user id is empty or longer than 200 bytes.
    case invalidUser
    /// A message role is empty, longer than 32 bytes, or contains a space.
    case invalidRole(String)
    /// The write was made under a lock lease that is no longer the newest for the session (it
    /// expired and someone else acquired the lock, or an active tab took it over): nothing was written.
    case staleLease
    /// A key of the session holds something else than the store wrote (for example overwritten
    /// by hand with another type).
    case corrupted(String)
    /// Redis failed: unreachable, timed out, or refused the command.
    case redis(HiredisError)

    public var description: String {
        switch self {
        case .invalidID: return "malformed session id"
        case .notFound: return "session not found or expired"
        case .metadataValueTooLarge(let key, let bytes, let limit):
            return "metadata value for '\(key)' is \(bytes) bytes; the limit is \(limit)"
        case .invalidMetadataKey(let key): return "invalid metadata key '\(key.prefix(40))'"
        case .messageTooLarge(let bytes, let limit): return "message is \(bytes) bytes; the limit is \(limit)"
        case .sessionTooLarge(let bytes, let limit): return "session would be \(bytes) bytes; the limit is \(limit)"
        case .invalidUser: return "invalid user id"
        case .invalidRole(let role): return "invalid message role '\(role.prefix(40))'"
        case .staleLease: return "the lock lease is stale: a newer one was issued for the session"
        case .corrupted(let detail): return "session data is corrupted: \(detail)"
        case .redis(let error): return "\(error)"
        }
    }

    public static func == (lhs: SessionError, rhs: SessionError) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }
}
