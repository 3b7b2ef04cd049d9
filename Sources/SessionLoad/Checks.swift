import Foundation
import HiredisNIO
import SessionCache

/// The correctness checks of a run, from what Redis holds and what the workers recorded.
struct Checks: Codable, Sendable {
    var sessions = 0
    var lostUpdates = 0
    var phantomUpdates = 0
    var hooksMissed = 0
    var hooksDuplicated = 0
    var resurrected = 0
    var aliveAtEnd = 0
    var keysWithoutTTL: [String] = []
    var messages: [String] = []

    var passed: Bool {
        lostUpdates == 0 && phantomUpdates == 0 && hooksMissed == 0 && hooksDuplicated == 0 && resurrected == 0
            && keysWithoutTTL.isEmpty
    }

    static func run(client: HiredisClient, store: SessionStore, parameters: LoadParameters) async throws -> Checks {
        let book = parameters.bookkeeping
        let namespace = parameters.namespace
        var checks = Checks()
        func hash(_ key: String) async throws -> [String: Int] {
            let pairs = try await client.send(RESPCommand("HGETALL", .string(key))).array ?? []
            var result: [String: Int] = [:]
            for index in stride(from: 0, to: pairs.count - 1, by: 2) { result[pairs[index].string ?? ""] = pairs[index + 1].int ?? 0 }
            return result
        }
        let created = Set(try await client.send(RESPCommand("SMEMBERS", .string("\(book):created"))).array?.compactMap(\.string) ?? [])
        let rotated = Set(try await client.send(RESPCommand("SMEMBERS", .string("\(book):rotated"))).array?.compactMap(\.string) ?? [])
        let expected = try await hash("\(book):expected")
        let hooks = try await hash("\(book):hooks")
        let final = try await hash("\(book):final")
        let sessions = created.subtracting(rotated)
        checks.sessions = sessions.count

        // What is still there for each session.
        let keyspace = store.keyspace
        let ordered = Array(sessions)
        var alive: [String: Bool] = [:]
        var data: [String: Bool] = [:]
        var counters: [String: Int] = [:]
        for start in stride(from: 0, to: ordered.count, by: 500) {
            let chunk = ordered[start..<min(start + 500, ordered.count)]
            let replies = try await client.pipeline(
                chunk.map { RESPCommand("HGET", .string(keyspace.session($0)), .string(SessionKeyspace.Field.metadataPrefix + "turns")) })
            try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for id in chunk { group.addTask { (id, try await store.get(id) != nil) } }
                for try await (id, isAlive) in group { alive[id] = isAlive }
            }
            for (offset, id) in chunk.enumerated() {
                data[id] = !replies[offset].isNull
                counters[id] = replies[offset].int
            }
        }

        for id in sessions {
            let hookRuns = hooks[id] ?? 0
            if hookRuns > 1 {
                checks.hooksDuplicated += 1
                checks.messages.append("hook ran \(hookRuns) times for session \(id.prefix(8))…")
            }
            if alive[id] == true {
                checks.aliveAtEnd += 1
                if hookRuns > 0 {
                    checks.resurrected += 1
                    checks.messages.append("session \(id.prefix(8))… is alive after its hook ran")
                }
            } else if hookRuns == 0 {
                checks.hooksMissed += 1
                checks.messages.append("session \(id.prefix(8))… ended but its hook never ran")
            } else if data[id] == true {
                checks.resurrected += 1
                checks.messages.append("session \(id.prefix(8))… has data after its hook ran")
            }
            // Every increment a worker saw succeed must be in the session's counter.
            let wanted = expected[id] ?? 0
            let actual = alive[id] == true ? (counters[id] ?? 0) : (final[id] ?? counters[id] ?? 0)
            if actual < wanted {
                checks.lostUpdates += wanted - actual
                checks.messages.append("session \(id.prefix(8))…: \(wanted) increments succeeded, counter is \(actual)")
            } else if actual > wanted {
                checks.phantomUpdates += actual - wanted
                checks.messages.append("session \(id.prefix(8))…: counter is \(actual) but only \(wanted) increments succeeded")
            }
        }

        // Nothing lives forever: every key of the run has a TTL.
        for pattern in ["\(namespace):*", "\(book):*"] {
            var cursor = "0"
            repeat {
                let reply = try await client.send(RESPCommand("SCAN", .string(cursor), "MATCH", .string(pattern), "COUNT", 1000))
                guard let parts = reply.array, parts.count == 2 else { break }
                cursor = parts[0].string ?? "0"
                let keys = parts[1].array?.compactMap(\.string) ?? []
                if !keys.isEmpty {
                    let ttls = try await client.pipeline(keys.map { RESPCommand("PTTL", .string($0)) })
                    for (key, ttl) in zip(keys, ttls) where ttl.int == -1 { checks.keysWithoutTTL.append(key) }
                }
            } while cursor != "0"
        }
        if !checks.keysWithoutTTL.isEmpty { checks.messages.append("keys without a TTL: \(checks.keysWithoutTTL.prefix(5))") }
        return checks
    }
}
