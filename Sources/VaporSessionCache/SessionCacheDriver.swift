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
    /// ```swift
    /// app.sessions.use { _ in SessionCacheDriver(store: store) }
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
    /// - The value under ``userKey`` is the session's user (``init(store:authenticating:redeemsImported:passive:)`` takes the
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
    ///   ``cookieConfiguration(name:secure:maxAge:)`` while old cookies are about.
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
            self.init(store: store, userKey: "_\(User.self)Session", redeemsImported: redeemsImported, passive: passive)
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

        /// Store and lock errors as Vapor's `Abort` (an `AbortError`): 503 while Redis is in trouble
        /// (logged; nobody is logged out), 401 for a session that ended, 409 busy, 413 too large,
        /// 400 bad input, each with a fixed text.
        private func answering<T>(_ request: Request, _ body: () async throws -> T) async throws -> T {
            do {
                return try await body()
            } catch {
                guard let answer = WebAnswer(error) else { throw error }
                if answer.isServerFault { request.logger.error("session store unavailable", metadata: ["error": "\(error)"]) }
                throw Abort(HTTPResponseStatus(statusCode: answer.status), reason: answer.message)
            }
        }

        private func create(_ data: SessionData, _ request: Request) async throws -> SessionID {
            let metadata = data.snapshot.mapValues { JSONValue.string($0) }
            // (Vapor has a `Session` type too: the store's is left to inference here.)
            let id =
                if let userKey, let user = data[userKey] {
                    try await store.create(user: user, metadata: metadata).id
                } else {
                    try await store.createAnonymous(metadata: metadata).id
                }
            request.storage[LoadedSession.self] = data.snapshot
            return SessionID(string: id)
        }

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
            let values = session.metadata.compactMapValues { value -> String? in
                if case .string(let text) = value { return text }
                return nil
            }
            request.storage[LoadedSession.self] = values
            return SessionData(initialData: values)
        }

        private func update(_ sessionID: SessionID, _ data: SessionData, _ request: Request) async throws -> SessionID {
            let sessionID = request.storage[RedeemedID.self] ?? sessionID
            let before = request.storage[LoadedSession.self] ?? [:]
            let after = data.snapshot
            var changes: [String: JSONValue] = [:]
            for (key, value) in after where before[key] != value { changes[key] = .string(value) }
            for key in before.keys where after[key] == nil { changes[key] = .null }
            guard !changes.isEmpty else { return sessionID }
            if let userKey, before[userKey] != after[userKey] {
                return try await changeUser(
                    of: sessionID, from: before[userKey], to: after[userKey], data: after, changes: changes, request)
            }
            do {
                try await store.setMetadata(sessionID.string, changes)
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

        /// Log-in binds the anonymous session to its user under a new id; another user or log-out ends
        /// the session and carries its data on under a new id.
        private func changeUser(
            of sessionID: SessionID, from oldUser: String?, to newUser: String?, data: [String: String], changes: [String: JSONValue],
            _ request: Request
        ) async throws -> SessionID {
            let id: String
            if oldUser == nil, let newUser {
                do {
                    id = try await store.bind(sessionID.string, to: newUser).id
                    try await store.setMetadata(id, changes)
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
                let metadata = data.mapValues { JSONValue.string($0) }
                id =
                    if let newUser {
                        try await store.create(user: newUser, metadata: metadata).id
                    } else {
                        try await store.createAnonymous(metadata: metadata).id
                    }
            }
            request.storage[LoadedSession.self] = data
            return SessionID(string: id)
        }

        private func delete(_ sessionID: SessionID, _ request: Request) async throws {
            let sessionID = request.storage[RedeemedID.self] ?? sessionID
            guard store.isWellFormed(sessionID.string) else { return }  // nothing of ours to delete
            try await store.delete(sessionID.string)
        }

        /// Vapor's session cookie with safe attributes: `HttpOnly`, `Secure` (unless `secure` is
        /// false, for plain-HTTP development), `SameSite=Lax`, path `/`, and a `Max-Age`.
        public static func cookieConfiguration(
            name: String = "session", secure: Bool = true, maxAge: Duration = .seconds(12 * 3600)
        ) -> SessionsConfiguration {
            SessionsConfiguration(cookieName: name) { id in
                HTTPCookies.Value(
                    string: id.string, maxAge: Int(maxAge.components.seconds), path: "/", isSecure: secure, isHTTPOnly: true,
                    sameSite: .lax)
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
    }

    /// Runs an `ExpiryListener` for the lifetime of a Vapor application: started when the app has
    /// booted, stopped gracefully when it shuts down (claiming stops, running hooks finish, their
    /// sessions are finalized; nothing is cut to run again elsewhere).
    ///
    /// A configuration the listener cannot run with fails the app's boot; an error while it runs is
    /// logged on the application's logger.
    ///
    /// ```swift
    /// app.lifecycle.use(ExpiryListenerLifecycle(ExpiryListener(store: store) { expired in ... }))
    /// ```
    public final class ExpiryListenerLifecycle: LifecycleHandler {
        private let listener: ExpiryListener
        private let running = NIOLockedValueBox<(group: ServiceGroup, task: Task<Void, Never>)?>(nil)

        public init(_ listener: ExpiryListener) {
            self.listener = listener
        }

        public func didBootAsync(_ application: Application) async throws {
            try listener.validate()
            let logger = application.logger
            let group = ServiceGroup(
                configuration: .init(services: [.init(service: listener)], gracefulShutdownSignals: [], logger: logger))
            let task = Task {
                do {
                    try await group.run()
                } catch {
                    logger.error("the expiry listener stopped", metadata: ["error": "\(error)"])
                }
            }
            running.withLockedValue { $0 = (group, task) }
        }

        public func shutdownAsync(_ application: Application) async {
            guard let (group, task) = running.withLockedValue({ $0 }) else { return }
            await group.triggerGracefulShutdown()
            await task.value
        }
    }
#endif  // Vapor
