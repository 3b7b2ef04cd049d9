import HiredisNIO

/// What the session store throws. Every case means nothing was written, except two:
/// ``redis(_:)`` with `commandMayHaveRun` (the reply was lost: the write may have happened), and
/// ``notReplicated(acknowledged:required:)`` (it happened on the primary).
public enum SessionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The id is not one the store issues (27 URL-safe base64 characters naming one of its buckets).
    case invalidID
    /// The session does not exist, ended, or was deleted or rotated.
    case notFound
    /// A metadata value is larger than ``SessionStoreConfiguration/Limits/maxMetadataValueBytes``.
    case metadataValueTooLarge(key: String, bytes: Int, limit: Int)
    /// A metadata key is empty, longer than ``SessionStoreConfiguration/Limits/maxMetadataKeyBytes``,
    /// or contains a control character.
    case invalidMetadataKey(String)
    /// The write would give the session more metadata keys than
    /// ``SessionStoreConfiguration/Limits/maxMetadataKeys``.
    case tooManyMetadataKeys(count: Int, limit: Int)
    /// A message is larger than ``SessionStoreConfiguration/Limits/maxMessageBytes``.
    case messageTooLarge(bytes: Int, limit: Int)
    /// One call appends more messages than ``SessionStoreConfiguration/Limits/maxMessagesPerCall``.
    case tooManyMessages(count: Int, limit: Int)
    /// The write would take the session past ``SessionStoreConfiguration/Limits/maxSessionBytes``
    /// (counted after the message window is trimmed).
    case sessionTooLarge(bytes: Int, limit: Int)
    /// The user id is empty, longer than 200 bytes, or contains a line break.
    case invalidUser
    /// A message role is empty, longer than 32 bytes, or contains a space.
    case invalidRole(String)
    /// The agent type is longer than ``SessionStoreConfiguration/Limits/maxAgentTypeBytes`` or
    /// contains a control character.
    case invalidAgentType
    /// A tab name is empty, longer than 64 bytes, or not made of letters, digits, `-` and `_`.
    case invalidTab
    /// A device label is longer than ``SessionStoreConfiguration/Limits/maxDeviceLabelBytes`` or
    /// contains a control character.
    case invalidDeviceLabel
    /// A session handle is not one the store gives out (``DeviceSession/handle``: 24 lowercase
    /// hexadecimal digits).
    case invalidHandle
    /// The write was made under a lock lease that is no longer held (it expired, or another tab took
    /// the lock over): nothing was written.
    case staleLease
    /// ``SessionStore/bind(_:to:)`` of a session that has a user already.
    case notAnonymous
    /// A ``TimeoutMode/custom(_:)`` idle timeout outside
    /// ``SessionStoreConfiguration/customIdleTimeouts`` (the message says which).
    case invalidTimeoutMode(String)
    /// The anonymous session is being bound to its user (``SessionStore/bind(_:to:)`` from this or
    /// another tab is under way, or was interrupted less than 30 seconds ago): nothing was
    /// written. Retry: with the bound session's id once the bind returns, or the same call later.
    case bindingInProgress
    /// The store's configuration cannot work (the message says why).
    case invalidConfiguration(String)
    /// The Redis server cannot run the store (it needs Redis 7.0 or later, for Functions).
    case unsupportedServer(String)
    /// A key of the session holds something else than the store wrote (for example overwritten
    /// by hand with another type).
    case corrupted(String)
    /// Redis failed: unreachable, timed out, or refused the command.
    case redis(HiredisError)
    /// The write was applied on the primary, but fewer replicas than
    /// ``SessionStoreConfiguration/replicaAcknowledgement`` asks for confirmed it in time: a
    /// failover could lose it.
    case notReplicated(acknowledged: Int, required: Int)

    public var description: String {
        switch self {
        case .invalidID: return "malformed session id"
        case .notFound: return "session not found or ended"
        case .metadataValueTooLarge(let key, let bytes, let limit):
            return "metadata value for '\(key.prefix(40))' is \(bytes) bytes; the limit is \(limit)"
        case .invalidMetadataKey(let key): return "invalid metadata key '\(key.prefix(40))'"
        case .tooManyMetadataKeys(let count, let limit): return "the session would have \(count) metadata keys; the limit is \(limit)"
        case .messageTooLarge(let bytes, let limit): return "message is \(bytes) bytes; the limit is \(limit)"
        case .tooManyMessages(let count, let limit): return "\(count) messages in one call; the limit is \(limit)"
        case .sessionTooLarge(let bytes, let limit): return "session would be \(bytes) bytes; the limit is \(limit)"
        case .invalidUser: return "invalid user id"
        case .invalidRole(let role): return "invalid message role '\(role.prefix(40))'"
        case .invalidAgentType: return "invalid agent type"
        case .invalidTab: return "invalid tab name"
        case .invalidDeviceLabel: return "invalid device label"
        case .invalidHandle: return "invalid session handle"
        case .staleLease: return "the lock lease is no longer held: nothing was written"
        case .notAnonymous: return "the session has a user already"
        case .invalidTimeoutMode(let text): return "invalid timeout mode: \(text)"
        case .bindingInProgress: return "the session is being bound to its user: nothing was written; retry"
        case .invalidConfiguration(let text): return "invalid session store configuration: \(text)"
        case .unsupportedServer(let text): return "unsupported Redis server: \(text)"
        case .corrupted(let detail): return "session data is corrupted: \(detail)"
        case .redis(let error): return "\(error)"
        case .notReplicated(let acknowledged, let required):
            return "the write is on the primary but only \(acknowledged) of \(required) replicas confirmed it"
        }
    }

}
