import Foundation
import HiredisNIO

extension SessionStore {
    /// The user's live sessions, most recently written first (messages, metadata, resume), with a
    /// summary of each: one read-only call on the user's bucket, costing O(limit). It looks at no
    /// more than ``SessionStoreConfiguration/Limits/maxListScan`` index entries (a `limit` above
    /// that is lowered): entries of sessions that ended by themselves, not pruned yet, count
    /// against that bound.
    public func list(user: String, limit: Int = 50) async throws(SessionError) -> [SessionSummary] {
        try Self.validate(user: user)
        guard limit > 0 else { return [] }
        let scan = configuration.limits.maxListScan
        return try await instrumentation.run("list") {
            try await redis.call(ListFunction(userIndexKey: keyspace.userSessions(user), limit: min(limit, scan), scan: scan))
        }
    }

    /// How many live sessions the user has (at most `limit`, and at most
    /// ``SessionStoreConfiguration/Limits/maxListScan``, are counted).
    public func count(user: String, limit: Int = 1000) async throws(SessionError) -> Int {
        try await list(user: user, limit: limit).count
    }

    /// Ends every session of the user ("log out everywhere"): a session created at the same moment
    /// is either ended too or created after, and then listed. Returns how many live sessions ended.
    ///
    /// It takes one call per 100 sessions, so that no call holds
    /// Redis for long whatever the user has; each session ends atomically, and a failure part way
    /// leaves the rest alive (call again). Sessions created while it runs end too, up to as many
    /// again as the user had when it started.
    @discardableResult
    public func deleteAll(user: String) async throws(SessionError) -> Int {
        try Self.validate(user: user)
        return try await instrumentation.run("delete_all") {
            let function = DeleteUserFunction(
                userIndexKey: keyspace.userSessions(user), user: user, eventsChannel: eventsChannel,
                indexLifetimeMilliseconds: configuration.indexLifetime.wholeMilliseconds)
            var result = try await redis.call(function)
            var ended = result.ended
            // Bounded: a user creating sessions as fast as they end cannot keep it going forever.
            var calls = 1
            let most = 2 * (result.left / DeleteUserFunction.batch + 1) + 2
            while result.left > 0 && calls < most {
                result = try await redis.call(function)
                ended += result.ended
                calls += 1
            }
            return ended
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
