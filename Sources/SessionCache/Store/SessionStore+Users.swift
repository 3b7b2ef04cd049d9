import Foundation
import HiredisNIO

extension SessionStore {
    /// The user's live sessions, most recently written first (messages, metadata, resume), with a
    /// summary of each: one read-only call on the user's bucket, costing O(limit).
    public func list(user: String, limit: Int = 50) async throws(SessionError) -> [SessionSummary] {
        try validate(user: user)
        guard limit > 0 else { return [] }
        return try await instrumentation.run("list") {
            try await redis.call(ListFunction(userIndexKey: keyspace.userSessions(user), limit: limit))
        }
    }

    /// How many live sessions the user has (at most `limit` are counted).
    public func count(user: String, limit: Int = 1000) async throws(SessionError) -> Int {
        try await list(user: user, limit: limit).count
    }

    /// Ends every session of the user ("log out everywhere"), atomically: a session created at the
    /// same moment is either ended too or created after, and then listed. Returns how many there were.
    @discardableResult
    public func deleteAll(user: String) async throws(SessionError) -> Int {
        try validate(user: user)
        return try await instrumentation.run("delete_all") {
            try await redis.call(
                DeleteUserFunction(
                    userIndexKey: keyspace.userSessions(user), eventsChannel: eventsChannel,
                    indexLifetimeMilliseconds: configuration.indexLifetime.wholeMilliseconds))
        }
    }

    /// Store-wide figures, summed over the buckets (one pipelined read-only call per bucket).
    ///
    /// With ``SessionStoreConfiguration/expiryListener``, ``SessionStats/activeSessions`` counts the
    /// sessions alive or awaiting their hook, and ``SessionStats/endedSessions`` every ended one.
    /// Without a listener nobody sees sessions end by themselves: then active sessions are the
    /// users' indexed sessions (ended ones included until listed or deleted), and only deletions
    /// count as ended.
    public func stats() async throws(SessionError) -> SessionStats {
        try await instrumentation.run("stats") {
            var total = StatsFunction.Result()
            let functions = (0..<keyspace.bucketCount).map { StatsFunction(statsKey: keyspace.stats(bucket: $0)) }
            for start in stride(from: 0, to: functions.count, by: 256) {
                let chunk = functions[start..<min(start + 256, functions.count)]
                try await withThrowingTaskGroup(of: StatsFunction.Result.self) { group in
                    for function in chunk { group.addTask { try await self.redis.call(function) } }
                    for try await bucket in group {
                        total.created += bucket.created
                        total.ended += bucket.ended
                        total.endedLifetimeMilliseconds += bucket.endedLifetimeMilliseconds
                        total.sessions += bucket.sessions
                        total.users += bucket.users
                    }
                }
            }
            return SessionStats(
                activeSessions: total.sessions, users: total.users,
                sessionsPerUser: total.users == 0 ? 0 : Double(total.sessions) / Double(total.users), endedSessions: total.ended,
                averageSessionDurationSeconds: total.ended == 0 ? 0 : Double(total.endedLifetimeMilliseconds) / Double(total.ended) / 1000)
        }
    }
}
