import Foundation
import HiredisNIO
import NIOCore

extension SessionStore {
    /// Appends one message; the window (``SessionStoreConfiguration/messageWindow``) is enforced in
    /// Redis. Meaningful activity: slides the idle expiry.
    ///
    /// - Throws: ``SessionError/messageTooLarge(bytes:limit:)``,
    ///   ``SessionError/sessionTooLarge(bytes:limit:)``, ``SessionError/notFound``.
    public func appendMessage(_ id: String, _ message: SessionMessage, lease: LockLease? = nil) async throws(SessionError) {
        try await appendMessages(id, [message], lease: lease)
    }

    /// Appends a user message and the assistant's answer, atomically.
    public func appendTurn(_ id: String, user: String, assistant: String, lease: LockLease? = nil) async throws(SessionError) {
        let now = Date()
        try await appendMessages(
            id, [SessionMessage(role: "user", content: user, at: now), SessionMessage(role: "assistant", content: assistant, at: now)],
            lease: lease)
    }

    /// Appends messages in order, atomically. With a `lease`, the write is fenced: it is refused
    /// with ``SessionError/staleLease`` when a newer lease was issued for the session since.
    public func appendMessages(_ id: String, _ messages: [SessionMessage], lease: LockLease? = nil) async throws(SessionError) {
        try validate(id: id)
        let fenceArgument = try self.fence(of: lease, for: id)
        guard !messages.isEmpty else { return }
        let limit = configuration.limits.maxMessageBytes
        for message in messages {
            if message.content.utf8.count > limit { throw .messageTooLarge(bytes: message.content.utf8.count, limit: limit) }
            if !MessageCoding.isValidRole(message.role) { throw .invalidRole(message.role) }
        }
        let encoded = messages.map(MessageCoding.encode)
        try await instrumentation.run("append_messages", session: id) {
            let arguments: [RESPArgument] =
                [
                    .integer(Self.nowMilliseconds()), .integer(grace), fenceArgument, .integer(configuration.messageWindow),
                    .integer(configuration.limits.maxSessionBytes),
                ] + encoded.map { .string($0) }
            let reply = try await runScript(SessionScripts.appendMessages, id: id, arguments: arguments)
            guard case .array(let parts) = reply, let status = parts.first?.int else {
                throw SessionError.corrupted("unexpected reply \(reply)")
            }
            try checkWriteStatus(status, detail: parts.count > 1 ? parts[1].int : nil)
        }
    }

    /// The most recent messages, oldest first (at most `limit`, at most the window). Read-only:
    /// does not slide the expiry.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive.
    public func recentMessages(_ id: String, limit: Int = 20) async throws(SessionError) -> [SessionMessage] {
        try validate(id: id)
        return try await instrumentation.run("recent_messages", session: id) {
            let replies = try await redis.pipeline([
                RESPCommand("EXISTS", .string(keys.alive(id))),
                RESPCommand("LRANGE", .string(keys.messages(id)), .integer(-max(1, limit)), -1),
            ])
            try Self.check(replies)
            guard replies[0].int == 1 else { throw SessionError.notFound }
            return try (replies[1].array ?? []).map { value in
                guard case .bulkString(let bytes) = value, let message = MessageCoding.decode(bytes) else {
                    throw SessionError.corrupted("a message is not in the form the store writes")
                }
                return message
            }
        }
    }

    /// Removes every message; metadata stays. Meaningful activity. Fenced with a `lease`.
    public func clearMessages(_ id: String, lease: LockLease? = nil) async throws(SessionError) {
        try validate(id: id)
        let fenceArgument = try self.fence(of: lease, for: id)
        try await instrumentation.run("clear_messages", session: id) {
            let reply = try await runScript(
                SessionScripts.clearMessages, id: id, arguments: [.integer(Self.nowMilliseconds()), .integer(grace), fenceArgument])
            try checkWriteStatus(reply.int ?? 0, detail: nil)
        }
    }
}

/// Messages as redis-cli shows them, one list element each: `<role> <unix ms> <content>`, for
/// example `user 1732185600000 Hello there`. Compact on purpose: a JSON wrapper would cost ~50 bytes
/// a message, a quarter of a typical session's memory.
enum MessageCoding {
    static func encode(_ message: SessionMessage) -> String {
        "\(message.role) \(Int((message.at.timeIntervalSince1970 * 1000).rounded())) \(message.content)"
    }

    static func decode(_ bytes: ByteBuffer) -> SessionMessage? {
        SessionMessage(storedLine: String(buffer: bytes))
    }

    /// A role is one short word: it is the first field of the stored line.
    static func isValidRole(_ role: String) -> Bool {
        !role.isEmpty && role.utf8.count <= 32 && !role.contains(where: { $0 == " " || $0.isNewline })
    }

    /// The start of a message for summaries: at most 60 bytes of UTF-8, so that the session hash
    /// stays in Redis's compact listpack encoding (hash-max-listpack-value is 64 by default).
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
        self.init(role: String(parts[0]), content: parts.count == 3 ? String(parts[2]) : "", at: SessionStore.date(milliseconds))
    }
}
