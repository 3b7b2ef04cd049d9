import Foundation
import HiredisNIO
import NIOCore

extension SessionStore {
    /// Appends one message; the window (``SessionStoreConfiguration/messageWindow``) is enforced in
    /// Redis. Meaningful activity: slides the idle expiry.
    ///
    /// - Throws: ``SessionError/messageTooLarge(bytes:limit:)``, ``SessionError/tooManyMessages(count:limit:)``,
    ///   ``SessionError/sessionTooLarge(bytes:limit:)``, ``SessionError/notFound``.
    public func appendMessage(_ id: String, _ message: SessionMessage, lease: LockLease? = nil) async throws(SessionError) {
        try await appendMessages(id, [message], lease: lease)
    }

    /// Appends a user message and the assistant's answer, atomically.
    public func appendTurn(_ id: String, user: String, assistant: String, lease: LockLease? = nil) async throws(SessionError) {
        try await appendMessages(
            id, [SessionMessage(role: "user", content: user), SessionMessage(role: "assistant", content: assistant)], lease: lease)
    }

    /// Appends messages in order, atomically, stamped with Redis's clock. The window keeps the
    /// newest ``SessionStoreConfiguration/messageWindow``; the session's size limit is checked after
    /// that trim. With a `lease`, the write happens only while the lease is still held
    /// (``SessionError/staleLease`` otherwise).
    public func appendMessages(_ id: String, _ messages: [SessionMessage], lease: LockLease? = nil) async throws(SessionError) {
        try validate(id: id)
        let leaseArguments = try self.leaseArguments(lease, for: id)
        guard !messages.isEmpty else { return }
        let limits = configuration.limits
        if messages.count > limits.maxMessagesPerCall { throw .tooManyMessages(count: messages.count, limit: limits.maxMessagesPerCall) }
        for message in messages {
            if message.content.utf8.count > limits.maxMessageBytes {
                throw .messageTooLarge(bytes: message.content.utf8.count, limit: limits.maxMessageBytes)
            }
            if !MessageCoding.isValidRole(message.role) { throw .invalidRole(message.role) }
        }
        try await instrumentation.run("append_messages", session: id) {
            let result = try await redis.call(
                AppendFunction(
                    sessionKey: keyspace.session(id), lease: leaseArguments, window: configuration.messageWindow,
                    maxSessionBytes: limits.maxSessionBytes, messages: messages.map { ($0.role, $0.content) }),
                replicatedTo: configuration.dataWriteAcknowledgement)
            try check(result.write)
        }
    }

    /// The most recent messages, oldest first (at most `limit`, at most the window). Read-only:
    /// does not slide the expiry.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive.
    public func recentMessages(_ id: String, limit: Int = 20) async throws(SessionError) -> [SessionMessage] {
        try validate(id: id)
        return try await instrumentation.run("recent_messages", session: id) {
            guard
                let lines = try await redis.call(
                    RecentMessagesFunction(sessionKey: keyspace.session(id), limit: min(max(1, limit), configuration.messageWindow)))
            else {
                throw SessionError.notFound
            }
            return try lines.map { value in
                guard case .bulkString(let bytes) = value, let message = MessageCoding.decode(bytes) else {
                    throw SessionError.corrupted("a message is not in the form the store writes")
                }
                return message
            }
        }
    }

    /// Removes every message; metadata stays. Meaningful activity. With a `lease`, only while it is held.
    public func clearMessages(_ id: String, lease: LockLease? = nil) async throws(SessionError) {
        try validate(id: id)
        let leaseArguments = try self.leaseArguments(lease, for: id)
        try await instrumentation.run("clear_messages", session: id) {
            try check(
                try await redis.call(
                    ClearMessagesFunction(sessionKey: keyspace.session(id), lease: leaseArguments),
                    replicatedTo: configuration.dataWriteAcknowledgement))
        }
    }
}

/// Messages as redis-cli shows them, one list element each: `<role> <unix ms> <content>`, for
/// example `user 1732185600000 Hello there`. Compact on purpose: a JSON wrapper would cost ~50 bytes
/// a message, a quarter of a typical session's memory. The function that appends writes the line.
enum MessageCoding {
    static func decode(_ bytes: ByteBuffer) -> SessionMessage? {
        SessionMessage(storedLine: String(buffer: bytes))
    }

    /// A role is one short word: it is the first field of the stored line.
    static func isValidRole(_ role: String) -> Bool {
        !role.isEmpty && role.utf8.count <= 32 && !role.contains(where: { $0 == " " || $0.isNewline })
    }

    /// The start of a message for summaries: at most 60 bytes of UTF-8.
    static func preview(_ content: String) -> String {
        var preview = ""
        var bytes = 0
        for character in content {
            let size = character.utf8.count
            if bytes + size > 60 { break }
            preview.append(character)
            bytes += size
        }
        return preview
    }
}

extension SessionMessage {
    /// A message from its stored form in the messages list, `<role> <unix ms> <content>` (for tools
    /// that read Redis directly); nil for anything else.
    public init?(storedLine text: String) {
        let parts = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, !parts[0].isEmpty, let milliseconds = Int(parts[1]) else { return nil }
        self.init(role: String(parts[0]), content: parts.count == 3 ? String(parts[2]) : "", at: SessionRecord.date(milliseconds))
    }
}
