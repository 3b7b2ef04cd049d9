import Foundation
import HiredisNIO
import Logging

/// The session store: what an app server calls on every request, from any of its instances.
///
/// Sessions live in Redis as hashes with native TTLs that meaningful activity refreshes (sliding
/// expiry), capped by an absolute lifetime per timeout mode. Every operation is one call of a
/// server-side function (`sessions.lua`) on one Redis Cluster slot: the session, its timer, its
/// messages and every index entry change together or not at all, and every time that decides
/// anything is Redis's clock, never the app server's.
///
/// ```swift
/// let store = try SessionStore(client: client)
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
    /// Where the store's sessions live in Redis.
    public let keyspace: SessionKeyspace
    let redis: HiredisClient
    let instrumentation: StoreInstrumentation
    let timers: TimerNames

    /// A store on `client`; several stores (in one process or many) on one Redis and one
    /// namespace see the same sessions. The client loads the store's function library on its
    /// connections.
    ///
    /// - Throws: ``SessionError/invalidConfiguration(_:)``.
    public init(client: HiredisClient, configuration: SessionStoreConfiguration = SessionStoreConfiguration()) throws(SessionError) {
        try configuration.validate()
        client.preload(SessionFunctions.library)
        self.configuration = configuration
        self.keyspace = try SessionKeyspace(namespace: configuration.namespace, bucketCount: configuration.bucketCount)
        self.redis = client
        self.instrumentation = StoreInstrumentation(configuration: configuration)
        self.timers = TimerNames(
            maximumAge: configuration.expiryListener ? .seconds(600) : configuration.dataGrace / 4,
            capacity: configuration.touchCacheCapacity)
    }

    // MARK: Lifecycle

    /// Creates a session for `user` under a new id (its bucket and 144 bits from the system CSPRNG).
    ///
    /// - Throws: ``SessionError/invalidUser``, a limit error, or ``SessionError/redis(_:)``.
    public func create(
        user: String, metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil, agentType: String? = nil
    ) async throws(SessionError) -> Session {
        try Self.validate(user: user)
        return try await create(user: user, bucket: keyspace.bucket(ofUser: user), metadata: metadata, mode: mode, agentType: agentType)
    }

    /// Creates a session without a user (a visitor before login), in a random bucket. Bind it to
    /// its user at login with ``bind(_:to:)``.
    public func createAnonymous(
        metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil, agentType: String? = nil
    ) async throws(SessionError) -> Session {
        try await create(user: nil, bucket: Int.random(in: 0..<keyspace.bucketCount), metadata: metadata, mode: mode, agentType: agentType)
    }

    /// `lifetimeCap` shortens the absolute lifetime (an imported session keeps what it had left).
    func create(
        user: String?, bucket: Int, metadata: [String: JSONValue], mode: TimeoutMode?, agentType: String?,
        lifetimeCap: Duration? = nil
    ) async throws(SessionError) -> Session {
        var mode = try resolve(mode ?? configuration.defaultMode)
        if let lifetimeCap, lifetimeCap < mode.absoluteLifetime {
            mode = ResolvedMode(mode: mode.mode, absoluteLifetime: lifetimeCap)
        }
        try validate(agentType: agentType)
        let encoded = try encodeMetadata(metadata)
        if encoded.count > configuration.limits.maxMetadataKeys {
            throw .tooManyMetadataKeys(count: encoded.count, limit: configuration.limits.maxMetadataKeys)
        }
        let size = encoded.reduce(agentType?.utf8.count ?? 0) { $0 + $1.field.utf8.count + $1.value.utf8.count }
        if size > configuration.limits.maxSessionBytes {
            throw .sessionTooLarge(bytes: size, limit: configuration.limits.maxSessionBytes)
        }
        let id = SessionID.make(bucket: bucket)
        return try await instrumentation.run("create", session: id) {
            let result = try await redis.call(
                CreateFunction(
                    sessionKey: keyspace.session(id), user: user, mode: mode.mode, absoluteLifetime: mode.absoluteLifetime,
                    agentType: agentType, retention: retention(for: mode), eventsChannel: eventsChannel,
                    maxSessionsPerUser: configuration.limits.maxSessionsPerUser ?? 0, metadata: encoded),
                replicatedTo: configuration.replicaAcknowledgement)
            guard case .created(let timer, let now, let deadline) = result else {
                // 144 random bits do not collide; an existing key means someone forged one.
                throw SessionError.corrupted("keys for a freshly generated id already exist")
            }
            timers.remember(timer, for: id, redisTime: now, keyspace: keyspace)
            return Session(
                id: id, user: user, state: .created, createdAt: SessionRecord.date(now), lastActivity: SessionRecord.date(now),
                lastSeen: nil, mode: mode.mode, absoluteDeadline: SessionRecord.date(deadline), messageCount: 0, agentType: agentType,
                version: 1, metadata: metadata)
        }
    }

    /// Picks a session up again: when it is alive and belongs to `user` (nil for an anonymous
    /// session), refreshes its timer and returns it; otherwise ``ResumeResult/notFound`` and
    /// nothing changes.
    ///
    /// - Throws: ``SessionError/invalidID`` for an id the store cannot have issued.
    public func resume(_ id: String, user: String?) async throws(SessionError) -> ResumeResult {
        try validate(id: id)
        if let user { try Self.validate(user: user) }
        return try await instrumentation.run("resume", session: id) {
            let result = try await redis.call(
                ResumeFunction(
                    sessionKey: keyspace.session(id), user: user, resumeThreshold: configuration.resumeThreshold,
                    eventsChannel: eventsChannel))
            guard case .resumed(let inactive, let timer, let lastSeen, let now, let record) = result else { return .notFound }
            timers.remember(timer, for: id, redisTime: now, keyspace: keyspace)
            return .resumed(try record.session(id: id, lastActivity: now, lastSeen: lastSeen), inactiveFor: .milliseconds(inactive))
        }
    }

    /// Picks a session up again by its id alone, whoever its user is: for a web session whose
    /// cookie is the credential (the returned session names its user, which the application then
    /// trusts). Refreshes its timer like ``resume(_:user:)``; ``ResumeResult/notFound`` for an
    /// unknown or ended id, and nothing changes.
    ///
    /// - Throws: ``SessionError/invalidID`` for an id the store cannot have issued.
    public func resume(_ id: String) async throws(SessionError) -> ResumeResult {
        try validate(id: id)
        return try await instrumentation.run("resume", session: id) {
            var function = ResumeFunction(
                sessionKey: keyspace.session(id), user: nil, resumeThreshold: configuration.resumeThreshold, eventsChannel: eventsChannel)
            function.anyUser = true
            guard case .resumed(let inactive, let timer, let lastSeen, let now, let record) = try await redis.call(function) else {
                return .notFound
            }
            timers.remember(timer, for: id, redisTime: now, keyspace: keyspace)
            return .resumed(try record.session(id: id, lastActivity: now, lastSeen: lastSeen), inactiveFor: .milliseconds(inactive))
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
        if let id, keyspace.bucket(ofSession: id) != nil, case .resumed(let session, let inactive) = try await resume(id, user: user) {
            return .resumed(session, inactiveFor: inactive)
        }
        return .created(try await create(user: user, metadata: metadata, mode: mode))
    }

    /// Records activity. ``SessionActivity/meaningful`` slides the idle expiry (capped by the
    /// absolute deadline); ``SessionActivity/heartbeat`` records liveness without extending it.
    ///
    /// A meaningful touch is one plain command, `PEXPIRE <timer> <idle>`, when this instance has
    /// seen the session recently and it is far from its absolute deadline (see the README's "Keys in
    /// Redis"); else one function call that reads the session first and caps the timer exactly.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive (a late touch never
    ///   brings an ended session back).
    public func touch(_ id: String, activity: SessionActivity = .meaningful) async throws(SessionError) {
        try validate(id: id)
        if activity == .heartbeat {
            return try await instrumentation.run("heartbeat", session: id) {
                guard try await redis.call(HeartbeatFunction(sessionKey: keyspace.session(id))) else { throw SessionError.notFound }
            }
        }
        try await instrumentation.run("touch", session: id) {
            if let command = timers.fastTouch(for: id) {
                if try await redis.send(command).int == 1 { return }
                // Ended, or its timing changed (the timer was renamed): ask the session itself.
                timers.forget(id)
            }
            guard let (timer, now) = try await redis.call(TouchFunction(sessionKey: keyspace.session(id))) else {
                throw SessionError.notFound
            }
            timers.remember(timer, for: id, redisTime: now, keyspace: keyspace)
        }
    }

    /// The session, without refreshing anything (the read-only path); nil when it is not alive.
    public func get(_ id: String) async throws(SessionError) -> Session? {
        try validate(id: id)
        return try await instrumentation.run("get", session: id) {
            guard let result = try await redis.call(GetFunction(sessionKey: keyspace.session(id))) else { return nil }
            let idle = try result.record.milliseconds(SessionKeyspace.Field.idle)
            var session = try result.record.session(
                id: id, lastActivity: SessionRecord.lastActivity(now: result.now, left: result.millisecondsLeft, idle: idle),
                lastSeen: result.lastSeen)
            session.timeLeft = .milliseconds(result.millisecondsLeft)
            return session
        }
    }

    /// Ends the session now. With ``SessionStoreConfiguration/expiryListener`` its data is kept for
    /// the cleanup hook (reason ``ExpiryReason/deleted``); without, every key goes at once. The
    /// session is dead immediately either way. Returns whether it was alive.
    @discardableResult
    public func delete(_ id: String) async throws(SessionError) -> Bool {
        try validate(id: id)
        timers.forget(id)
        return try await instrumentation.run("delete", session: id) {
            try await redis.call(
                DeleteFunction(
                    sessionKey: keyspace.session(id), eventsChannel: eventsChannel,
                    indexLifetimeMilliseconds: configuration.indexLifetime.wholeMilliseconds),
                replicatedTo: configuration.replicaAcknowledgement)
        }
    }

    /// Gives the session a new id and makes the old one invalid at once, against session fixation
    /// (call it after login or a privilege change). One atomic call: the keys are renamed, whatever
    /// the session holds. Returns the session under its new id.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive.
    public func rotate(_ id: String) async throws(SessionError) -> Session {
        try validate(id: id)
        guard let bucket = keyspace.bucket(ofSession: id) else { throw .invalidID }
        timers.forget(id)
        let newID = SessionID.make(bucket: bucket)
        return try await instrumentation.run("rotate", session: id) {
            switch try await redis.call(
                RotateFunction(sessionKey: keyspace.session(id), newSessionKey: keyspace.session(newID), eventsChannel: eventsChannel),
                replicatedTo: configuration.replicaAcknowledgement)
            {
            case .rotated(_, _, let record):
                // Not remembered for the touch cache: rotate moves the keys but not the data's TTL,
                // and plain PEXPIREs from the cache could then move the timer past the data. The
                // first touch goes through the function, which pushes the data's TTL out first.
                return try record.session(id: newID)
            case .notAlive:
                throw SessionError.notFound
            case .exists:
                throw SessionError.corrupted("keys for a freshly generated id already exist")
            case .binding:
                throw SessionError.bindingInProgress
            }
        }
    }

    // MARK: Shared machinery

    /// `<namespace>:events`, or '' when events are off.
    var eventsChannel: String { configuration.publishEvents ? keyspace.events : "" }

    /// A timeout mode with its absolute lifetime, checked.
    struct ResolvedMode {
        let mode: TimeoutMode
        let absoluteLifetime: Duration
    }

    func resolve(_ mode: TimeoutMode) throws(SessionError) -> ResolvedMode {
        if case .custom(let idle) = mode, !configuration.customIdleTimeouts.contains(idle) {
            let range = configuration.customIdleTimeouts
            throw .invalidTimeoutMode("a custom idle timeout of \(idle) is outside \(range.lowerBound) ... \(range.upperBound)")
        }
        let lifetime = min(configuration.absoluteLifetimes.lifetime(for: mode), SessionStoreConfiguration.maximumLifetime)
        if mode.idleTimeout <= .zero { throw .invalidConfiguration("the idle timeout must be positive") }
        if lifetime < mode.idleTimeout {
            throw .invalidConfiguration("the absolute lifetime of \(mode.storedName) (\(lifetime)) is shorter than its idle timeout")
        }
        return ResolvedMode(mode: mode, absoluteLifetime: lifetime)
    }

    /// The retention settings for sessions of `mode`: index keys outlive its absolute lifetime.
    func retention(for mode: ResolvedMode) -> DataRetention {
        let base = configuration.retention
        let lifetime = max(base.indexLifetimeMilliseconds, (mode.absoluteLifetime + configuration.hookSafetyTTL).wholeMilliseconds)
        return DataRetention(
            listener: base.listener, graceMilliseconds: base.graceMilliseconds, indexLifetimeMilliseconds: lifetime,
            warningLeadMilliseconds: base.warningLeadMilliseconds)
    }

    func validate(id: String) throws(SessionError) {
        if keyspace.bucket(ofSession: id) == nil { throw .invalidID }
    }

    /// Whether `id` has the form of an id this store issues (27 URL-safe characters naming one of
    /// its buckets), without asking Redis: a cookie that fails this is not worth a round trip.
    public func isWellFormed(_ id: String) -> Bool {
        keyspace.bucket(ofSession: id) != nil
    }

    static func validate(user: String) throws(SessionError) {
        let count = user.utf8.count
        if count == 0 || count > 200 || user.contains(where: { $0.isNewline }) { throw .invalidUser }
    }

    func validate(agentType: String?) throws(SessionError) {
        guard let agentType else { return }
        if agentType.utf8.count > configuration.limits.maxAgentTypeBytes || agentType.unicodeScalars.contains(where: { $0.value < 0x20 }) {
            throw .invalidAgentType
        }
    }

    /// A tab name for per-tab locks: 1 to 64 letters, digits, `-` and `_` (it becomes part of a key),
    /// and not `queue` or `seen`: a tab's lock key `…:lock:<tab>` would be the session-wide lock's
    /// waiting queue or its last-seen hash (WRONGTYPE).
    static func validate(tab: String?) throws(SessionError) {
        guard let tab else { return }
        let bytes = tab.utf8
        if bytes.isEmpty || bytes.count > 64 || tab == "queue" || tab == "seen"
            || !bytes.allSatisfy({ SessionID.isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        {
            throw .invalidTab
        }
    }
}
