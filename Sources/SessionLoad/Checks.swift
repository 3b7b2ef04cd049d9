import Foundation
import HiredisNIO
import LoadVerdict
import SessionCache

/// Gathers each session's history from the bookkeeping Redis (what the workers saw) and the data
/// Redis (what is left), and has the checker judge it.
enum Checks {
    static func run(
        client: HiredisClient, books: Bookkeeping, store: SessionStore, parameters: LoadParameters, killedWorkers: Set<Int>,
        unfinishedAfterDrain: Int, asyncReplicationAllowance: Int = 0
    ) async throws -> Verdict {
        // Rotated ids live on under their new id; an id whose rotation is indeterminate cannot be
        // judged (the new id is unknown).
        let sessions = try await books.createdSessions().subtracting(try await books.rotatedSessions())
            .subtracting(try await books.uncertainSessions())
        let ok = try await books.acknowledgedIncrements()
        let pending = try await books.pendingIncrements()
        let runs = try await books.hookRuns()

        // What is left of each session.
        let keyspace = store.keyspace
        let ordered = Array(sessions)
        var histories: [SessionHistory] = []
        for start in stride(from: 0, to: ordered.count, by: 500) {
            let chunk = Array(ordered[start..<min(start + 500, ordered.count)])
            var commands: [RESPCommand] = []
            for id in chunk {
                commands.append(RESPCommand("HGET", .string(keyspace.session(id)), .string(SessionKeyspace.Field.metadataPrefix + "turns")))
                commands.append(RESPCommand("EXISTS", .string(keyspace.session(id))))
                commands.append(RESPCommand("EXISTS", .string(keyspace.messages(id))))
            }
            let replies = try await client.pipeline(commands)
            var alive: [String: Bool] = [:]
            try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for id in chunk { group.addTask { (id, try await store.get(id) != nil) } }
                for try await (id, isAlive) in group { alive[id] = isAlive }
            }
            for (offset, id) in chunk.enumerated() {
                histories.append(
                    SessionHistory(
                        id: id, ok: ok[id] ?? 0, indeterminate: max(0, pending[id] ?? 0), alive: alive[id] ?? false,
                        hasData: replies[offset * 3 + 1].int == 1 || replies[offset * 3 + 2].int == 1,
                        storedCounter: replies[offset * 3].int, hookRuns: runs[id] ?? []))
            }
        }

        // Nothing lives forever: every key of the run has a TTL.
        var withoutTTL: [String] = []
        for (redis, pattern) in [(client, "\(parameters.namespace):*"), (books.client, books.keys.all)] {
            let keys = try await redis.scanKeys(matching: pattern)
            for start in stride(from: 0, to: keys.count, by: 1000) {
                let chunk = Array(keys[start..<min(start + 1000, keys.count)])
                let ttls = try await redis.pipeline(chunk.map { RESPCommand("PTTL", .string($0)) })
                for (key, ttl) in zip(chunk, ttls) where ttl.int == -1 { withoutTTL.append(key) }
            }
        }
        return Verdict.judge(
            histories, killedWorkers: killedWorkers, keysWithoutTTL: withoutTTL, unfinishedAfterDrain: unfinishedAfterDrain,
            asyncReplicationAllowance: asyncReplicationAllowance)
    }
}
