import Foundation
import HiredisNIO

extension SessionStore {
    /// The user's sessions, most recently active first, with a summary of each.
    ///
    /// Reads the per-user index, then every listed session in one pipelined round trip; entries
    /// whose session is gone are removed from the index on the way (the index is a hint).
    public func list(user: String, limit: Int = 50) async throws(SessionError) -> [SessionSummary] {
        try validate(user: user)
        return try await instrumentation.run("list") {
            Array(try await liveSessions(of: user).prefix(max(0, limit)))
        }
    }

    /// How many live sessions the user has.
    public func count(user: String) async throws(SessionError) -> Int {
        try validate(user: user)
        return try await instrumentation.run("list") {
            try await liveSessions(of: user).count
        }
    }

    /// Deletes every session of the user ("log out everywhere"). Returns how many there were.
    @discardableResult
    public func deleteAll(user: String) async throws(SessionError) -> Int {
        try validate(user: user)
        return try await instrumentation.run("delete_all") {
            let ids =
                try await redis.send(RESPCommand("ZRANGE", .string(keys.userSessions(user)), 0, -1)).array?.compactMap(\.string) ?? []
            var deleted = 0
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for id in ids where SessionID.isWellFormed(id) { group.addTask { try await self.deleteSession(id) } }
                for try await existed in group where existed { deleted += 1 }
            }
            _ = try await redis.send(RESPCommand("DEL", .string(keys.userSessions(user))))
            return deleted
        }
    }

    /// Store-wide figures: active sessions, users, sessions per user, average session duration.
    public func stats() async throws(SessionError) -> SessionStats {
        try await instrumentation.run("stats") {
            let horizon = Self.nowMilliseconds() - configuration.absoluteLifetime.wholeMilliseconds - grace
            let replies = try await redis.pipeline([
                RESPCommand("ZREMRANGEBYSCORE", .string(keys.users), "-inf", .string("(\(horizon)")),
                RESPCommand("ZCARD", .string(keys.deadlines)),
                RESPCommand("ZCARD", .string(keys.users)),
                RESPCommand("HMGET", .string(keys.stats), "sessions_ended", "ended_lifetime_ms"),
            ])
            try Self.check(replies)
            let active = replies[1].int ?? 0
            let users = replies[2].int ?? 0
            let ended = replies[3].array?.first?.int ?? 0
            let lifetime = replies[3].array?.last?.int ?? 0
            return SessionStats(
                activeSessions: active, users: users, sessionsPerUser: users == 0 ? 0 : Double(active) / Double(users),
                endedSessions: ended, averageSessionDurationSeconds: ended == 0 ? 0 : Double(lifetime) / Double(ended) / 1000)
        }
    }

    private func liveSessions(of user: String) async throws -> [SessionSummary] {
        let indexKey = keys.userSessions(user)
        let ids = try await redis.send(RESPCommand("ZRANGE", .string(indexKey), 0, -1)).array?.compactMap(\.string) ?? []
        let valid = ids.filter(SessionID.isWellFormed)
        guard !valid.isEmpty else { return [] }
        var commands: [RESPCommand] = []
        for id in valid {
            commands.append(RESPCommand("GET", .string(keys.alive(id))))
            commands.append(
                RESPCommand("HMGET", .string(keys.data(id)), "user", "agent_type", "last_activity", "message_count", "state"))
            commands.append(RESPCommand("LINDEX", .string(keys.messages(id)), -1))
        }
        let replies = try await redis.pipeline(commands)
        var summaries: [SessionSummary] = []
        var stale: [RESPArgument] = []
        for (offset, id) in valid.enumerated() {
            let fields = replies[offset * 3 + 1].array ?? []
            guard let lastActivity = replies[offset * 3].int, fields.count == 5, fields[0].string == user else {
                stale.append(.string(id))
                continue
            }
            var preview: String?
            if case .bulkString(let last) = replies[offset * 3 + 2], let message = MessageCoding.decode(last) {
                preview = MessageCoding.preview(message.content)
            }
            summaries.append(
                SessionSummary(
                    id: id, agentType: fields[1].string, preview: preview, updatedAt: Self.date(max(lastActivity, fields[2].int ?? 0)),
                    messageCount: fields[3].int ?? 0, state: fields[4].string.flatMap(SessionState.init(rawValue:)) ?? .active))
        }
        for id in ids where !SessionID.isWellFormed(id) { stale.append(.string(id)) }
        if !stale.isEmpty {
            // Repair the hint: entries of sessions that are gone.
            _ = try await redis.send(RESPCommand("ZREM", arguments: [.string(indexKey)] + stale))
        }
        return summaries.sorted { $0.updatedAt > $1.updatedAt }
    }
}
