import Foundation
import HiredisNIO
import LoadVerdict

/// The load driver's own records, in the bookkeeping Redis (which no fault touches): every key it
/// keeps there, and how each record is written and read, defined once. The workers and the
/// coordinator build it from the same ``LoadParameters``, so both sides agree on every name.
///
/// Every key is ``LoadParameters/bookkeeping`` (`load:<run id>`) + `:` + a name, and every write
/// renews its key's TTL (``LoadParameters/bookkeepingTTLMilliseconds``): the checks require a TTL
/// on every key of the run, these included.
///
/// | Key             | Type   | Holds                                              | Written by                    | Read by     |
/// |-----------------|--------|----------------------------------------------------|-------------------------------|-------------|
/// | `created`       | set    | ids a worker created, or rotated a session to      | worker: create, rotation      | checks      |
/// | `rotated`       | set    | ids rotated away (they live on under their new id) | worker: rotation              | checks      |
/// | `uncertain`     | set    | ids whose rotation's outcome nobody knows          | worker: rotate, rotation      | checks      |
/// | `ok`            | hash   | id → increments acknowledged                       | worker: increment, rotation   | checks      |
/// | `pending`       | hash   | id → increments sent, not (yet) acknowledged       | worker: increment, rotation   | checks      |
/// | `cookie:<user>` | string | the user's current session id, shared by its tabs  | worker: create, rotation      | worker      |
/// | `hook-runs`     | list   | one JSON `{"session", "run": HookRun}` per run     | worker: expiry hook           | checks      |
/// | `progress`      | hash   | `ops-<worker>`, `errors-<worker>`, `active`        | worker: every second          | coordinator |
/// | `stop`          | string | `1` once the drain is over                         | coordinator: end of the drain | worker      |
struct Bookkeeping: Sendable {
    /// The key names, all under one prefix.
    struct Keys: Sendable, Hashable {
        /// `load:<run id>` (``LoadParameters/bookkeeping``).
        let prefix: String

        var created: String { prefix + ":created" }
        var rotated: String { prefix + ":rotated" }
        var uncertain: String { prefix + ":uncertain" }
        var ok: String { prefix + ":ok" }
        var pending: String { prefix + ":pending" }
        func cookie(user: String) -> String { prefix + ":cookie:" + user }
        var hookRuns: String { prefix + ":hook-runs" }
        var progress: String { prefix + ":progress" }
        var stop: String { prefix + ":stop" }
        /// A `SCAN` pattern that matches every key above (for the TTL check).
        var all: String { prefix + ":*" }
    }

    /// The bookkeeping Redis, apart from the data Redis under test.
    let client: HiredisClient
    let keys: Keys
    /// The TTL every write gives its key, in milliseconds.
    private let ttl: RESPArgument

    init(client: HiredisClient, parameters: LoadParameters) {
        self.client = client
        keys = Keys(prefix: parameters.bookkeeping)
        ttl = .integer(parameters.bookkeepingTTLMilliseconds)
    }

    func close() async { await client.close() }

    // MARK: Sessions and their cookies (worker)

    /// The session the user's cookie names (nil: none).
    func cookie(user: String) async throws -> String? {
        try await client.get(keys.cookie(user: user)).map { String(buffer: $0) }
    }

    /// Puts a created session on the books and names it in the user's cookie unless another tab's
    /// session got there first; returns the session the cookie names.
    func recordCreated(_ id: String, user: String) async throws -> String {
        let cookie = keys.cookie(user: user)
        let replies = try await client.pipeline([
            RESPCommand("SET", .string(cookie), .string(id), "NX", "PX", ttl),
            RESPCommand("GET", .string(cookie)),
            RESPCommand("SADD", .string(keys.created), .string(id)),
            RESPCommand("PEXPIRE", .string(keys.created), ttl),
        ])
        return replies[1].string ?? id
    }

    /// Drops the user's cookie if it still names `id` (the session ended).
    func dropCookie(user: String, ifNaming id: String) async throws {
        let cookie = keys.cookie(user: user)
        if try await client.get(cookie).map({ String(buffer: $0) }) == id { _ = try await client.delete([cookie]) }
    }

    // MARK: Rotations (worker)

    /// Marks `id` uncertain before its rotation is sent; returns whether it was not already.
    func markUncertain(_ id: String) async throws -> Bool {
        let replies = try await client.pipeline([
            RESPCommand("SADD", .string(keys.uncertain), .string(id)),
            RESPCommand("PEXPIRE", .string(keys.uncertain), ttl),
        ])
        return replies[0].int == 1
    }

    /// Takes `id` off the uncertain ones: its rotation certainly did not happen.
    func clearUncertain(_ id: String) async throws {
        _ = try await client.send(RESPCommand("SREM", .string(keys.uncertain), .string(id)))
    }

    /// Puts a rotation on the books in one atomic step (``rotation``).
    func recordRotation(of id: String, to newID: String, user: String) async throws {
        let names = [keys.ok, keys.pending, keys.cookie(user: user), keys.rotated, keys.created, keys.uncertain]
        _ = try await client.run(Self.rotation, keys: names.map { .string($0) }, arguments: [.string(id), .string(newID), ttl])
    }

    /// A rotation on the books: the old id's counters move to the new id, the cookie names the new
    /// id, the old id is rotated (no longer uncertain), the new one created.
    /// KEYS: ok, pending, cookie, rotated, created, uncertain. ARGV: old id, new id, TTL in ms.
    static let rotation = LuaScript(
        """
        local ok = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
        local pending = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
        redis.call('HINCRBY', KEYS[1], ARGV[2], ok)
        redis.call('HINCRBY', KEYS[2], ARGV[2], pending)
        redis.call('HDEL', KEYS[1], ARGV[1])
        redis.call('HDEL', KEYS[2], ARGV[1])
        redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
        redis.call('SADD', KEYS[4], ARGV[1])
        redis.call('SADD', KEYS[5], ARGV[2])
        redis.call('SREM', KEYS[6], ARGV[1])
        for i = 1, 6 do
            if i ~= 3 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
        end
        return 1
        """)

    // MARK: Increments (worker)

    /// An increment of `id`'s counter is about to be sent: pending until its outcome is known.
    func recordPending(_ id: String) async throws {
        _ = try await client.pipeline([
            RESPCommand("HINCRBY", .string(keys.pending), .string(id), 1),
            RESPCommand("PEXPIRE", .string(keys.pending), ttl),
        ])
    }

    /// The increment certainly did not run: no longer pending.
    func dropPending(_ id: String) async throws {
        _ = try await client.send(RESPCommand("HINCRBY", .string(keys.pending), .string(id), -1))
    }

    /// The increment was acknowledged: ok, no longer pending.
    func recordAck(_ id: String) async throws {
        _ = try await client.pipeline([
            RESPCommand("HINCRBY", .string(keys.ok), .string(id), 1),
            RESPCommand("HINCRBY", .string(keys.pending), .string(id), -1),
            RESPCommand("PEXPIRE", .string(keys.ok), ttl),
        ])
    }

    // MARK: Hook runs (worker writes, checks read)

    /// A `hook-runs` entry: the run, and the session it ended.
    private struct HookRunEntry: Codable {
        var session: String
        var run: SessionHistory.HookRun
    }

    /// Appends one run of `id`'s hook, as JSON.
    func recordHookRun(_ run: SessionHistory.HookRun, session id: String) async throws {
        let entry = try JSONEncoder().encode(HookRunEntry(session: id, run: run))
        _ = try await client.pipeline([
            RESPCommand("RPUSH", .string(keys.hookRuns), .bytes(Array(entry))),
            RESPCommand("PEXPIRE", .string(keys.hookRuns), ttl),
        ])
    }

    /// Every hook run on the books, by session, in the order they were recorded. An entry that
    /// does not decode is skipped (its session then looks as if its hook never ran).
    func hookRuns() async throws -> [String: [SessionHistory.HookRun]] {
        let decoder = JSONDecoder()
        var runs: [String: [SessionHistory.HookRun]] = [:]
        for reply in try await client.send(RESPCommand("LRANGE", .string(keys.hookRuns), 0, -1)).array ?? [] {
            guard let bytes = reply.bytes, let entry = try? decoder.decode(HookRunEntry.self, from: Data(bytes)) else { continue }
            runs[entry.session, default: []].append(entry.run)
        }
        return runs
    }

    // MARK: Sessions and counters (checks)

    /// Every id created (`created`).
    func createdSessions() async throws -> Set<String> { try await members(keys.created) }
    /// Every id rotated away (`rotated`).
    func rotatedSessions() async throws -> Set<String> { try await members(keys.rotated) }
    /// Every id whose rotation is indeterminate (`uncertain`).
    func uncertainSessions() async throws -> Set<String> { try await members(keys.uncertain) }
    /// Acknowledged increments by session (`ok`).
    func acknowledgedIncrements() async throws -> [String: Int] { try await counts(keys.ok) }
    /// Increments of unknown outcome by session (`pending`).
    func pendingIncrements() async throws -> [String: Int] { try await counts(keys.pending) }

    private func members(_ key: String) async throws -> Set<String> {
        Set(try await client.send(RESPCommand("SMEMBERS", .string(key))).array?.compactMap(\.string) ?? [])
    }

    private func counts(_ key: String) async throws -> [String: Int] {
        let pairs = try await client.send(RESPCommand("HGETALL", .string(key))).array ?? []
        var result: [String: Int] = [:]
        for index in stride(from: 0, to: pairs.count - 1, by: 2) { result[pairs[index].string ?? ""] = pairs[index + 1].int ?? 0 }
        return result
    }

    // MARK: Progress and stop (worker ↔ coordinator)

    /// The workers' progress, summed.
    struct Progress: Sendable {
        var operations = 0
        var errors = 0
        /// The store's active sessions, as worker 0 last sampled them.
        var activeSessions = 0
    }

    /// Puts a worker's totals on the books, and the store's active sessions when it sampled them.
    func recordProgress(worker: Int, operations: Int, errors: Int, activeSessions: Int?) async throws {
        var commands = [
            RESPCommand(
                "HSET", .string(keys.progress), .string("ops-\(worker)"), .integer(operations), .string("errors-\(worker)"),
                .integer(errors)),
            RESPCommand("PEXPIRE", .string(keys.progress), ttl),
        ]
        if let activeSessions { commands.append(RESPCommand("HSET", .string(keys.progress), "active", .integer(activeSessions))) }
        _ = try await client.pipeline(commands)
    }

    /// Every worker's totals, summed.
    func progress() async throws -> Progress {
        let fields = try await client.send(RESPCommand("HGETALL", .string(keys.progress))).array ?? []
        var progress = Progress()
        for index in stride(from: 0, to: fields.count - 1, by: 2) {
            let name = fields[index].string ?? ""
            if name.hasPrefix("ops-") { progress.operations += fields[index + 1].int ?? 0 }
            if name.hasPrefix("errors-") { progress.errors += fields[index + 1].int ?? 0 }
            if name == "active" { progress.activeSessions = fields[index + 1].int ?? 0 }
        }
        return progress
    }

    /// Tells the workers the drain is over.
    func requestStop() async throws {
        _ = try await client.send(RESPCommand("SET", .string(keys.stop), "1", "PX", ttl))
    }

    /// Whether the coordinator has said the drain is over.
    func stopRequested() async throws -> Bool {
        try await client.send(RESPCommand("EXISTS", .string(keys.stop))).int == 1
    }
}
