import Foundation
import HiredisNIO
import Logging

/// The session store: what an app server calls on every request, from any of its instances.
///
/// Sessions live in Redis as hashes with native TTLs that every meaningful activity refreshes
/// (sliding expiry), capped by an absolute lifetime. Every operation is atomic (a Lua script on
/// the session's own keys) and costs one round trip, with the cross-session indexes (per user,
/// deadlines) updated in the same pipeline; ``delete(_:)`` and ``rotate(_:)``, which must learn
/// the session's user first, cost two.
///
/// ```swift
/// let store = SessionStore(client: client)
/// let session = try await store.create(user: "alice", metadata: ["plan": "pro"])
/// try await store.appendTurn(session.id, user: "Hi", assistant: "Hello! How can I help?")
/// switch try await store.resume(session.id, user: "alice") {
/// case .resumed(let session, let inactiveFor): print(session.state, inactiveFor)
/// case .notFound: break  // start a new conversation
/// }
/// ```
public final class SessionStore: Sendable {
    /// The configuration the store was made with.
    public let configuration: SessionStoreConfiguration
    let redis: HiredisClient
    let keys: SessionKeys
    let instrumentation: StoreInstrumentation
    let touchCache: TouchCache

    /// A store on `client`; several stores (in one process or many) on one Redis and one
    /// namespace see the same sessions.
    public init(client: HiredisClient, configuration: SessionStoreConfiguration = SessionStoreConfiguration()) {
        self.configuration = configuration
        self.redis = client
        self.keys = SessionKeys(namespace: configuration.namespace)
        self.instrumentation = StoreInstrumentation(configuration: configuration)
        self.touchCache = TouchCache(lifetime: configuration.touchCacheLifetime)
    }

    // MARK: Lifecycle

    /// Creates a session for `user` under a new id (256 bits from the system CSPRNG).
    ///
    /// - Throws: ``SessionError/invalidUser``, a metadata limit, or ``SessionError/redis(_:)``.
    public func create(
        user: String, metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil, agentType: String? = nil
    ) async throws(SessionError) -> Session {
        try validate(user: user)
        let mode = mode ?? metadata["timeout_mode"]?.stringValue.flatMap(TimeoutMode.init(storedName:)) ?? configuration.defaultMode
        let encoded = try encodeMetadata(metadata)
        let size = encoded.reduce(0) { $0 + $1.value.utf8.count }
        if size > configuration.limits.maxSessionBytes {
            throw .sessionTooLarge(bytes: size, limit: configuration.limits.maxSessionBytes)
        }
        let id = SessionID.make()
        return try await instrumentation.run("create", session: id) {
            let now = Self.nowMilliseconds()
            let idle = mode.idleTimeout.wholeMilliseconds
            let deadline = now + configuration.absoluteLifetime.wholeMilliseconds
            var arguments: [RESPArgument] = [
                .integer(now), .integer(grace), .integer(idle), .integer(deadline), .string(user), .string(mode.storedName),
                .string(agentType ?? ""), .integer(size),
            ]
            for (field, value) in encoded { arguments += [.string(field), .string(value)] }
            let expires = min(now + idle, deadline)
            let reply = try await runScript(
                SessionScripts.create, id: id, arguments: arguments,
                alongside: indexUpdatesForNewSession(id: id, user: user, now: now, expires: expires)
                    + eventCommand(.created, id: id, user: user))
            guard reply.int ?? 0 > 0 else {
                // 256 random bits do not collide; an existing key means someone forged one.
                throw SessionError.corrupted("keys for a freshly generated id already exist")
            }
            return Session(
                id: id, user: user, state: .created, createdAt: Self.date(now), lastActivity: Self.date(now), lastSeen: nil, mode: mode,
                absoluteDeadline: Self.date(deadline), messageCount: 0, agentType: agentType, version: 1, metadata: metadata)
        }
    }

    /// Picks a session up again: when it is alive and belongs to `user`, refreshes its TTLs and
    /// returns it; otherwise ``ResumeResult/notFound`` and nothing changes.
    ///
    /// - Throws: ``SessionError/invalidID`` for an id the store cannot have issued.
    public func resume(_ id: String, user: String) async throws(SessionError) -> ResumeResult {
        try validate(id: id)
        try validate(user: user)
        return try await instrumentation.run("resume", session: id) {
            let reply = try await runScript(
                SessionScripts.resume, id: id,
                arguments: [
                    .integer(Self.nowMilliseconds()), .integer(grace), .string(user),
                    .integer(configuration.resumeThreshold.wholeMilliseconds),
                    .string(eventJSON(.resumed, id: id, user: user) ?? ""), .string(keys.events),
                ])
            guard case .array(let parts) = reply, parts.count == 2, let inactive = parts[0].int, let fields = parts[1].array else {
                return .notFound
            }
            return .resumed(try decodeSession(id: id, fields: fields), inactiveFor: .milliseconds(inactive))
        }
    }

    /// What ``recover(_:user:metadata:mode:)`` did.
    public enum RecoverResult: Sendable, Hashable {
        /// The session was alive and the user's: resumed.
        case resumed(Session, inactiveFor: Duration)
        /// It was not: a new one was created.
        case created(Session)

        /// The session either way.
        public var session: Session {
            switch self {
            case .resumed(let session, _), .created(let session): return session
            }
        }
    }

    /// Resumes the session when it is alive and the user's, creates a new one otherwise (also for
    /// a nil or malformed id): what a request handler calls with the id from a cookie.
    public func recover(
        _ id: String?, user: String, metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil
    ) async throws(SessionError) -> RecoverResult {
        if let id, SessionID.isWellFormed(id), case .resumed(let session, let inactive) = try await resume(id, user: user) {
            return .resumed(session, inactiveFor: inactive)
        }
        return .created(try await create(user: user, metadata: metadata, mode: mode))
    }

    /// Records activity. ``SessionActivity/meaningful`` slides the idle expiry;
    /// ``SessionActivity/heartbeat`` records liveness without extending it.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive (a late touch never
    ///   brings an expired session back).
    public func touch(_ id: String, activity: SessionActivity = .meaningful) async throws(SessionError) {
        try validate(id: id)
        try await instrumentation.run("touch", session: id) {
            let now = Self.nowMilliseconds()
            if activity == .meaningful, let idle = touchCache.fastPathIdle(for: id, now: now, grace: grace) {
                let reply = try await redis.send(
                    RESPCommand("SET", .string(keys.alive(id)), .integer(now), "XX", "PX", .integer(idle)))
                if reply.isNull {
                    touchCache.forget(id)
                    throw SessionError.notFound
                }
                return
            }
            let reply = try await runScript(
                SessionScripts.touch, id: id,
                arguments: [.integer(now), .integer(grace), activity == .heartbeat ? "heartbeat" : "meaningful"])
            if case .array(let timing) = reply, timing.count == 3, let idle = timing[0].int, let deadline = timing[1].int,
                let dataUntil = timing[2].int
            {
                touchCache.remember(id, idle: idle, deadline: deadline, dataUntil: dataUntil)
            } else if reply.int != 1 {
                touchCache.forget(id)
                throw SessionError.notFound
            }
        }
    }

    /// The session, without refreshing anything (the read-only path); nil when it is not alive.
    public func get(_ id: String) async throws(SessionError) -> Session? {
        try validate(id: id)
        return try await instrumentation.run("get", session: id) {
            let replies = try await redis.pipeline([
                RESPCommand("GET", .string(keys.alive(id))), RESPCommand("HGETALL", .string(keys.data(id))),
            ])
            try Self.check(replies)
            guard let lastActivity = replies[0].int, let fields = replies[1].array, !fields.isEmpty else { return nil }
            var session = try decodeSession(id: id, fields: fields)
            session.lastActivity = max(session.lastActivity, Self.date(lastActivity))
            return session
        }
    }

    /// Removes every key of the session and its index entries. Returns whether it existed.
    @discardableResult
    public func delete(_ id: String) async throws(SessionError) -> Bool {
        try validate(id: id)
        touchCache.forget(id)
        return try await instrumentation.run("delete", session: id) {
            try await deleteSession(id)
        }
    }

    /// Gives the session a new id and makes the old one invalid at once, against session fixation
    /// (call it after login or a privilege change). Returns the session under its new id.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive.
    public func rotate(_ id: String) async throws(SessionError) -> Session {
        try validate(id: id)
        touchCache.forget(id)
        return try await instrumentation.run("rotate", session: id) {
            // Take the session out atomically (the old id is dead from here on), then place it
            // under the new id together with the index updates.
            let taken = try await runScript(SessionScripts.take, id: id, arguments: [])
            guard case .array(let parts) = taken, parts.count == 3, let ttl = parts[0].int, let fields = parts[1].array,
                let messages = parts[2].array
            else { throw SessionError.notFound }
            let newID = SessionID.make()
            let session = try decodeSession(id: newID, fields: fields)
            let now = Self.nowMilliseconds()
            // The hash moves as it is, except data_until, which the script sets for the new keys.
            var arguments = Self.withoutField(
                "data_until", in: fields, prefix: [.integer(now), .integer(ttl), .integer(grace), .integer(0)])
            arguments += messages.compactMap { if case .bulkString(let bytes) = $0 { return .buffer(bytes) } else { return nil } }
            var indexes = indexUpdatesForNewSession(
                id: newID, user: session.user, now: Int(session.createdAt.timeIntervalSince1970 * 1000), expires: now + ttl,
                countAsCreated: false)
            indexes += [
                RESPCommand("ZREM", .string(keys.userSessions(session.user)), .string(id)),
                RESPCommand("ZREM", .string(keys.deadlines), .string(id)),
                RESPCommand("ZREM", .string(keys.warnings), .string(id)),
            ]
            indexes += eventCommand(.rotated, id: id, user: session.user, detail: newID)
            let placed = try await runScript(SessionScripts.place, id: newID, arguments: arguments, alongside: indexes)
            guard placed.int == 1 else { throw SessionError.corrupted("keys for a freshly generated id already exist") }
            return session
        }
    }

    /// The Lua source of the touch script, for measuring its Redis-side ceiling.
    public static var touchScriptSource: String { SessionScripts.touch.source }

    // MARK: Shared machinery

    var grace: Int { configuration.expiryGrace.wholeMilliseconds }

    /// Deletes one session and its index entries; two round trips (the user is learnt first).
    /// With cleanup hooks, the session is retired instead: dead at once, its data kept for the
    /// expiry listener, which runs the hook and then removes everything.
    func deleteSession(_ id: String) async throws -> Bool {
        if configuration.cleanupHooks {
            let reply = try await runScript(SessionScripts.retire, id: id, arguments: [.integer(grace)])
            guard case .array(let parts) = reply, parts.count == 2, let user = parts[0].string else { return false }
            try Self.check(
                try await redis.pipeline(
                    [
                        // Due now (not 0: index pruning drops entries older than any session's lifetime).
                        RESPCommand("ZADD", .string(keys.deadlines), .integer(Self.nowMilliseconds()), .string(id)),
                        RESPCommand("PEXPIRE", .string(keys.deadlines), .integer(indexLifetime)),
                        RESPCommand("ZREM", .string(keys.userSessions(user)), .string(id)),
                    ] + eventCommand(.deleted, id: id, user: user)))
            return true
        }
        let reply = try await runScript(SessionScripts.delete, id: id, arguments: [])
        var commands = [
            RESPCommand("ZREM", .string(keys.deadlines), .string(id)), RESPCommand("ZREM", .string(keys.warnings), .string(id)),
        ]
        var existed = false
        if case .array(let parts) = reply, parts.count == 2, let user = parts[0].string {
            existed = true
            let lifetime = Self.nowMilliseconds() - (parts[1].int ?? Self.nowMilliseconds())
            commands += [
                RESPCommand("ZREM", .string(keys.userSessions(user)), .string(id)),
                RESPCommand("HINCRBY", .string(keys.stats), "sessions_ended", 1),
                RESPCommand("HINCRBY", .string(keys.stats), "ended_lifetime_ms", .integer(max(0, lifetime))),
                RESPCommand("PEXPIRE", .string(keys.stats), .integer(Self.statsLifetime)),
            ]
            commands += eventCommand(.deleted, id: id, user: user)
        }
        try Self.check(try await redis.pipeline(commands))
        return existed
    }

    /// The index writes that go with a new session, in the same round trip as its script. Old
    /// entries (older than any session can live) are pruned on the way, and every index key gets
    /// a TTL that outlives every session in it: nothing lives forever.
    func indexUpdatesForNewSession(id: String, user: String, now: Int, expires: Int, countAsCreated: Bool = true) -> [RESPCommand] {
        let horizon = indexLifetime
        var commands = [
            RESPCommand("ZADD", .string(keys.userSessions(user)), .integer(now), .string(id)),
            RESPCommand("ZREMRANGEBYSCORE", .string(keys.userSessions(user)), "-inf", .string("(\(now - horizon)")),
            RESPCommand("PEXPIRE", .string(keys.userSessions(user)), .integer(horizon)),
            RESPCommand("ZADD", .string(keys.deadlines), .integer(expires), .string(id)),
            RESPCommand("ZREMRANGEBYSCORE", .string(keys.deadlines), "-inf", .string("(\(now - horizon)")),
            RESPCommand("PEXPIRE", .string(keys.deadlines), .integer(horizon)),
            RESPCommand("ZADD", .string(keys.users), .integer(now), .string(user)),
            RESPCommand("ZREMRANGEBYSCORE", .string(keys.users), "-inf", .string("(\(now - horizon)")),
            RESPCommand("PEXPIRE", .string(keys.users), .integer(horizon)),
        ]
        if let lead = configuration.expiryWarningLead {
            commands.append(RESPCommand("ZADD", .string(keys.warnings), .integer(expires - lead.wholeMilliseconds), .string(id)))
            commands.append(RESPCommand("PEXPIRE", .string(keys.warnings), .integer(horizon)))
        }
        if countAsCreated {
            commands += [
                RESPCommand("HINCRBY", .string(keys.stats), "sessions_created", 1),
                RESPCommand("PEXPIRE", .string(keys.stats), .integer(Self.statsLifetime)),
            ]
        }
        return commands
    }

    /// How long the cross-session index keys live after their last update: longer than any session.
    var indexLifetime: Int { configuration.absoluteLifetime.wholeMilliseconds + grace }

    /// The stats counters are kept 30 days after the last change.
    static let statsLifetime = 30 * 24 * 3600 * 1000

    /// Runs a session script on the session's keys, with `alongside` commands in the same
    /// round trip. On NOSCRIPT the script alone is sent again with EVAL (the others ran).
    func runScript(
        _ script: LuaScript, id: String, keys sessionKeys: [RESPArgument]? = nil, arguments: [RESPArgument],
        alongside: [RESPCommand] = []
    ) async throws -> RESPReply {
        let keyArguments = sessionKeys ?? keys.session(id)
        if alongside.isEmpty {
            return try await redis.run(script, keys: keyArguments, arguments: arguments)
        }
        let tail = [.integer(keyArguments.count)] + keyArguments + arguments
        let replies = try await redis.pipeline([RESPCommand("EVALSHA", arguments: [.string(script.sha1)] + tail)] + alongside)
        try Self.check(Array(replies.dropFirst()))
        switch replies[0] {
        case .error(let text) where text.hasPrefix("NOSCRIPT"):
            return try await redis.send(RESPCommand("EVAL", arguments: [.string(script.source)] + tail))
        case .error(let text):
            throw HiredisError.server(HiredisServerError(reply: text))
        case let reply:
            return reply
        }
    }

    /// Throws the first error reply of a pipeline.
    static func check(_ replies: [RESPReply]) throws {
        for reply in replies {
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
        }
    }

    private static func withoutField(_ name: String, in fields: [RESPReply], prefix: [RESPArgument]) -> [RESPArgument] {
        var arguments = prefix
        var pairs = 0
        var index = 0
        while index + 1 < fields.count {
            if case .bulkString(let field) = fields[index], case .bulkString(let value) = fields[index + 1],
                String(buffer: field) != name
            {
                arguments += [.buffer(field), .buffer(value)]
                pairs += 1
            }
            index += 2
        }
        arguments[3] = .integer(pairs)
        return arguments
    }

    func validate(id: String) throws(SessionError) {
        if !SessionID.isWellFormed(id) { throw .invalidID }
    }

    func validate(user: String) throws(SessionError) {
        let count = user.utf8.count
        if count == 0 || count > 200 || user.contains(where: { $0.isNewline }) { throw .invalidUser }
    }

    static func nowMilliseconds() -> Int { Int((Date().timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ milliseconds: Int) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
