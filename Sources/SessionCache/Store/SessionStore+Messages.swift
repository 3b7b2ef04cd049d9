import Foundation
import NIOCore
import RedisClient

extension SessionStore {
    /// Appends one message; the window (``SessionStoreConfiguration/messageWindow``) is enforced in
    /// Redis. Meaningful activity: slides the idle expiry.
    ///
    /// - Throws: ``SessionError/messageTooLarge(bytes:limit:)``,
    ///   ``SessionError/sessionTooLarge(bytes:limit:)``, ``SessionError/notFound``.
    public func appendMessage(_ id: String, _ message: SessionMessage) async throws(SessionError) {
        try await appendMessages(id, [message])
    }

    /// Appends a user message and the assistant's answer, atomically.
    public func appendTurn(_ id: String, user: String, assistant: String) async throws(SessionError) {
        let now = Date()
        try await appendMessages(
            id, [SessionMessage(role: "user", content: user, at: now), SessionMessage(role: "assistant", content: assistant, at: now)])
    }

    /// Appends messages in order, atomically.
    public func appendMessages(_ id: String, _ messages: [SessionMessage]) async throws(SessionError) {
        try validate(id: id)
        guard let last = messages.last else { return }
        let limit = configuration.limits.maxMessageBytes
        for message in messages where message.content.utf8.count > limit {
            throw .messageTooLarge(bytes: message.content.utf8.count, limit: limit)
        }
        let encoded = messages.map(MessageCoding.encode)
        try await instrumentation.run("append_messages", session: id) {
            let arguments: [RedisArgument] =
                [
                    .integer(Self.nowMilliseconds()), .integer(grace), .integer(configuration.messageWindow),
                    .integer(configuration.limits.maxSessionBytes), .string(String(last.content.prefix(100))),
                ] + encoded.map { .string($0) }
            let reply = try await runScript(SessionScripts.appendMessages, id: id, arguments: arguments)
            guard case .array(let parts) = reply, let status = parts.first?.int else {
                throw SessionError.corrupted("unexpected reply \(reply)")
            }
            if status == 0 { throw SessionError.notFound }
            if status == -1 {
                throw SessionError.sessionTooLarge(
                    bytes: parts.count > 1 ? parts[1].int ?? 0 : 0, limit: configuration.limits.maxSessionBytes)
            }
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
                RedisCommand("EXISTS", .string(keys.alive(id))),
                RedisCommand("LRANGE", .string(keys.messages(id)), .integer(-max(1, limit)), -1),
            ])
            try Self.check(replies)
            guard replies[0].int == 1 else { throw SessionError.notFound }
            return try (replies[1].array ?? []).map { value in
                guard case .bulkString(let bytes) = value, let message = MessageCoding.decode(bytes) else {
                    throw SessionError.corrupted("a message is not the JSON the store writes")
                }
                return message
            }
        }
    }

    /// Removes every message; metadata stays. Meaningful activity.
    public func clearMessages(_ id: String) async throws(SessionError) {
        try validate(id: id)
        try await instrumentation.run("clear_messages", session: id) {
            let reply = try await runScript(
                SessionScripts.clearMessages, id: id, arguments: [.integer(Self.nowMilliseconds()), .integer(grace)])
            if reply.int != 1 { throw SessionError.notFound }
        }
    }
}

/// Messages as redis-cli shows them: `{"role":"user","content":"Hi","at":1732185600000}`.
enum MessageCoding {
    private struct Stored: Codable {
        var role: String
        var content: String
        var at: Int
    }

    static func encode(_ message: SessionMessage) -> String {
        let stored = Stored(role: message.role, content: message.content, at: Int((message.at.timeIntervalSince1970 * 1000).rounded()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding three plain fields cannot fail.
        return String(decoding: (try? encoder.encode(stored)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func decode(_ bytes: ByteBuffer) -> SessionMessage? {
        guard let stored = try? JSONDecoder().decode(Stored.self, from: Data(bytes.readableBytesView)) else { return nil }
        return SessionMessage(role: stored.role, content: stored.content, at: SessionStore.date(stored.at))
    }
}
