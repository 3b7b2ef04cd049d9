#if Vapor
    import Foundation
    import HiredisNIO
    import NIOConcurrencyHelpers
    import ServiceLifecycle
    import SessionCache
    import Vapor

    /// Vapor's sessions (`app.sessions`) on `SessionStore`: Redis hashes with native TTLs that
    /// slide on every request, expiry hooks and locks from the same store.
    ///
    /// With the application's session cache (`app.sessionCache`) the driver is
    /// `app.sessions.use(.sessionCache(authenticating: User.self))`; on a store of one's own:
    ///
    /// ```swift
    /// app.sessions.use { _ in SessionCacheDriver(store: store, authenticating: User.self) }
    /// app.sessions.configuration = SessionCacheDriver.cookieConfiguration()  // HttpOnly, Secure, SameSite=Lax
    /// app.middleware.use(app.sessions.middleware)
    /// ```
    ///
    /// - Reading a session resumes it (alive check and TTL slide in one round trip). A malformed,
    ///   unknown or ended cookie never throws: the request gets a fresh session.
    /// - Writing sends only the keys that changed since the read, in one call; when nothing changed
    ///   (a request that only read the session) nothing is written: the read already slid the TTL.
    /// - Values are Vapor's strings, stored as the session's metadata (one hash field each, visible
    ///   with `redis-cli HGETALL`).
    /// - A session with no data is not stored: a request that only looked at `request.session` (or
    ///   came with a stale cookie) stores nothing. Its cookie is cleared, or, with
    ///   ``SessionCacheMiddleware``, left as it is.
    /// - The value under ``userKey`` is not metadata but the session's user (``init(store:authenticating:redeemsImported:passive:)`` takes the
    ///   key `SessionAuthenticator` writes, `_<User>Session`). When it appears (log-in) the session is
    ///   bound to the user under a new id (against session fixation; the user's session list, log-out
    ///   everywhere and `session-cache kill --user` see it); when it changes or disappears (another
    ///   user, log-out) the session ends and its data continues under a new id.
    /// - A session that ended while a request ran (logged out everywhere, killed, expired, rotated)
    ///   does not come back: the request's changes are dropped and the next request with its cookie
    ///   starts without a session.
    /// - With `redeemsImported`, a cookie that holds the id of a session imported from vapor/redis
    ///   (`session-cache import --from vapor-redis`) picks that session up once, under its new id,
    ///   which the response's cookie carries. Keep vapor/redis's cookie name (`vapor-session`) in
    ///   ``cookieConfiguration(name:secure:domain:sameSite:maxAge:)`` while old cookies are about.
    public struct SessionCacheDriver: AsyncSessionDriver {
        let store: SessionStore
        /// The data key whose value is the session's user.
        public let userKey: String?
        /// Whether a former id of an imported session is honoured once.
        public let redeemsImported: Bool
        let isPassive: @Sendable (Request) -> Bool

        /// A driver on `store`. Requests for which `passive` is true (a page polling for news, say)
        /// read the session without sliding its timer: they must not keep an idle session alive.
        public init(
            store: SessionStore, userKey: String? = nil, redeemsImported: Bool = false,
            passive: @escaping @Sendable (Request) -> Bool = { _ in false }
        ) {
            self.store = store
            self.userKey = userKey
            self.redeemsImported = redeemsImported
            self.isPassive = passive
        }

        /// A driver whose sessions belong to the `User` that Vapor's `SessionAuthenticator` stores
        /// (under `_<User>Session`).
        ///
        /// ```swift
        /// app.sessions.use { _ in SessionCacheDriver(store: store, authenticating: User.self) }
        /// ```
        public init<User: SessionAuthenticatable>(
            store: SessionStore, authenticating user: User.Type, redeemsImported: Bool = false,
            passive: @escaping @Sendable (Request) -> Bool = { _ in false }
        ) {
            self.init(store: store, userKey: Self.userKey(for: User.self), redeemsImported: redeemsImported, passive: passive)
        }

        /// The data key under which Vapor's `SessionAuthenticator` keeps a `User`'s session id.
        static func userKey<User: SessionAuthenticatable>(for user: User.Type) -> String {
            "_\(User.self)Session"
        }

        public func createSession(_ data: SessionData, for request: Request) async throws -> SessionID {
            try await answering(request) { try await create(data, request) }
        }

        public func readSession(_ sessionID: SessionID, for request: Request) async throws -> SessionData? {
            try await answering(request) { try await read(sessionID, request) }
        }

        public func updateSession(_ sessionID: SessionID, to data: SessionData, for request: Request) async throws -> SessionID {
            try await answering(request) { try await update(sessionID, data, request) }
        }

        public func deleteSession(_ sessionID: SessionID, for request: Request) async throws {
            try await answering(request) { try await delete(sessionID, request) }
        }

        /// Store and lock errors as Vapor's `Abort` (see ``SessionCacheMiddleware``).
        private func answering<T>(_ request: Request, _ body: () async throws -> T) async throws -> T {
            do {
                return try await body()
            } catch {
                throw abort(for: error, logger: request.logger)
            }
        }

        private func create(_ data: SessionData, _ request: Request) async throws -> SessionID {
            // Nothing to keep (a handler only looked, or a stale cookie made Vapor start a session):
            // nothing is stored; the middleware leaves the cookie alone (without it, the cookie
            // factory clears the cookie for this id).
            guard !data.snapshot.isEmpty else {
                request.storage[NothingStored.self] = true
                return Self.nothingStored
            }
            let session = try await createSession(data.snapshot)
            remember(session, data.snapshot, request)
            return SessionID(string: session.id)
        }

        /// A session with `data`: its user from ``userKey``, everything else as metadata.
        private func createSession(_ data: [String: String]) async throws -> StoredSession {
            var metadata = data.mapValues { JSONValue.string($0) }
            // (Vapor has a `Session` type too: the store's is left to inference here.)
            if let userKey, let user = data[userKey] {
                metadata[userKey] = nil
                return try await store.create(user: user, metadata: metadata)
            }
            return try await store.createAnonymous(metadata: metadata)
        }

        /// The data as written (to write only changes) and the cookie's lifetime by Redis's clock.
        private func remember(_ session: StoredSession, _ data: [String: String], _ request: Request) {
            request.storage[LoadedSession.self] = data
            request.storage[CookieLifetime.self] = session.cookieMaxAge
        }

        /// The id of a session that was not stored, cleared from the cookie by
        /// ``cookieConfiguration(name:secure:domain:sameSite:maxAge:)``.
        static let nothingStored = SessionID(string: "")

        private func read(_ sessionID: SessionID, _ request: Request) async throws -> SessionData? {
            let session: StoredSession
            if store.isWellFormed(sessionID.string), isPassive(request) {
                guard let current = try await store.get(sessionID.string) else { return nil }
                session = current
            } else if store.isWellFormed(sessionID.string) {
                guard case .resumed(let resumed, _) = try await store.resume(sessionID.string) else { return nil }
                session = resumed
            } else if redeemsImported, ImportedSession.isValidFormerID(sessionID.string),
                let redeemed = try await store.redeemImported(sessionID.string)
            {
                // Vapor keeps the cookie's id for this request; the driver answers with the new one.
                request.storage[RedeemedID.self] = SessionID(string: redeemed.id)
                session = redeemed
            } else {
                return nil  // not one of ours (malformed): a fresh session, no error
            }
            var values = session.metadata.compactMapValues { value -> String? in
                if case .string(let text) = value { return text }
                return nil
            }
            if let userKey {
                // The user is the session's, never a metadata field (an imported one may have both).
                values[userKey] = session.user
            }
            remember(session, values, request)
            return SessionData(initialData: values)
        }

        private func update(_ sessionID: SessionID, _ data: SessionData, _ request: Request) async throws -> SessionID {
            let sessionID = request.storage[RedeemedID.self] ?? sessionID
            let before = request.storage[LoadedSession.self] ?? [:]
            let after = data.snapshot
            var changes: [String: JSONValue] = [:]
            for (key, value) in after where before[key] != value && key != userKey { changes[key] = .string(value) }
            for key in before.keys where after[key] == nil && key != userKey { changes[key] = .null }
            if let userKey, before[userKey] != after[userKey] {
                return try await changeUser(
                    of: sessionID, from: before[userKey], to: after[userKey], data: after, changes: changes, request)
            }
            guard !changes.isEmpty else { return sessionID }
            do {
                try await store.setMetadata(sessionID.string, changes, lease: lease(for: sessionID, request))
            } catch {
                // It ended meanwhile: it does not come back, and neither do these changes. (A `catch
                // .notFound` clause crashes the 6.3 compiler here.)
                guard error == .notFound else { throw error }
                request.storage[LoadedSession.self] = nil
                return sessionID
            }
            request.storage[LoadedSession.self] = after
            return sessionID
        }

        /// The request's lease when it is for `sessionID` (SessionCacheMiddleware with locks): a
        /// request that lost its lock cannot write over its successor's changes.
        private func lease(for sessionID: SessionID, _ request: Request) -> LockLease? {
            request.storage[LeaseKey.self].flatMap { $0.sessionID == sessionID.string ? $0 : nil }
        }

        /// Log-in binds the anonymous session to its user under a new id; another user or log-out ends
        /// the session and carries its data on under a new id.
        private func changeUser(
            of sessionID: SessionID, from oldUser: String?, to newUser: String?, data: [String: String], changes: [String: JSONValue],
            _ request: Request
        ) async throws -> SessionID {
            let session: StoredSession
            if oldUser == nil, let newUser {
                do {
                    // The request's changes first, fenced: the bind copies them, so the log-in and
                    // the data it came with land together or not at all.
                    if !changes.isEmpty { try await store.setMetadata(sessionID.string, changes, lease: lease(for: sessionID, request)) }
                    session = try await store.bind(sessionID.string, to: newUser)
                } catch {
                    // Ended before the log-in completed: nothing is created for it.
                    guard error == .notFound else { throw error }
                    request.storage[LoadedSession.self] = nil
                    return sessionID
                }
            } else {
                guard try await store.delete(sessionID.string) else {
                    request.storage[LoadedSession.self] = nil
                    return sessionID
                }
                // Logged out with nothing else kept: nothing to store.
                guard !data.isEmpty else {
                    request.storage[LoadedSession.self] = nil
                    request.storage[NothingStored.self] = true
                    return Self.nothingStored
                }
                session = try await createSession(data)
            }
            remember(session, data, request)
            return SessionID(string: session.id)
        }

        private func delete(_ sessionID: SessionID, _ request: Request) async throws {
            let sessionID = request.storage[RedeemedID.self] ?? sessionID
            guard store.isWellFormed(sessionID.string) else { return }  // nothing of ours to delete
            try await store.delete(sessionID.string)
        }

        /// Vapor's session cookie with safe attributes: `HttpOnly`, `Secure` (unless `secure` is
        /// false, for plain-HTTP development), `SameSite` (default `Lax`), path `/`.
        ///
        /// `Max-Age` is the session's: ``SessionCacheMiddleware`` sets it on each response to the
        /// time left to the session's absolute deadline by Redis's clock. Without that middleware
        /// the cookie has `maxAge` (nil: none, a browser-session cookie, which never outlives the
        /// session). The cookie of a session that was not stored (no data) is cleared.
        public static func cookieConfiguration(
            name: String = "session", secure: Bool = true, domain: String? = nil, sameSite: HTTPCookies.SameSitePolicy = .lax,
            maxAge: Duration? = nil
        ) -> SessionsConfiguration {
            SessionsConfiguration(cookieName: name) { id in
                HTTPCookies.Value(
                    string: id.string, maxAge: id.string.isEmpty ? 0 : maxAge.map { Int($0.components.seconds) }, domain: domain,
                    path: "/", isSecure: secure, isHTTPOnly: true, sameSite: sameSite)
            }
        }

        /// The session data as read, to write only what changed.
        struct LoadedSession: StorageKey {
            typealias Value = [String: String]
        }

        /// The new id of the imported session this request's cookie redeemed.
        struct RedeemedID: StorageKey {
            typealias Value = SessionID
        }

        /// The seconds from the session's last activity to its absolute deadline (Redis's times).
        struct CookieLifetime: StorageKey {
            typealias Value = Int
        }

        /// Set when the driver answered ``nothingStored``: no cookie is due.
        struct NothingStored: StorageKey {
            typealias Value = Bool
        }

        /// The lease of the lock ``SessionCacheMiddleware`` holds for this request.
        struct LeaseKey: StorageKey {
            typealias Value = LockLease
        }
    }
#endif  // Vapor
