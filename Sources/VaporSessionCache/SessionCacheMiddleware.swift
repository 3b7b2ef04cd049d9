#if Vapor
    import Logging
    import SessionCache
    import Vapor

    /// Vapor's sessions middleware on the session cache, made by
    /// `app.sessionCache.middleware(passive:tab:)`: use it instead of `app.sessions.middleware`.
    ///
    /// - With locks, a request whose cookie names a session holds the session's lock (the tab's,
    ///   with a per-tab policy) from before the session is read until after its changes are
    ///   written: two tabs' requests take turns, and each sees what the other wrote. The lease is
    ///   renewed while a slow handler runs; a handler that loses it is cancelled, and its write is
    ///   refused. Passive requests take no lock.
    /// - The cookie's `Max-Age` is the time left to the session's absolute deadline, by Redis's
    ///   clock: a cookie never outlives its session, and a long-lived session keeps its cookie.
    /// - Errors are `AbortError`s: Redis trouble `503` (logged; the cookie is kept, so nobody is
    ///   logged out), a lock not granted in time `409`, a session that ended `401`, a limit `413`,
    ///   bad input `400`, each with a fixed text.
    ///
    /// ```swift
    /// app.middleware.use(app.sessionCache.middleware(tab: { $0.headers.first(name: "X-Tab") }))
    /// ```
    public struct SessionCacheMiddleware: AsyncMiddleware {
        let sessions: SessionsMiddleware
        let cookieName: String
        let store: SessionStore
        let locks: SessionLock?
        let isPassive: @Sendable (Request) -> Bool
        let tab: @Sendable (Request) -> String?

        public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
            let response: Response
            if let locks, let id = request.cookies[cookieName]?.string, store.isWellFormed(id), !isPassive(request) {
                do {
                    response = try await locks.withLock(id, tab: tab(request)) { lease in
                        request.storage[SessionCacheDriver.LeaseKey.self] = lease
                        return try await sessions.respond(to: request, chainingTo: next).get()
                    }
                } catch {
                    throw abort(for: error, logger: request.logger)
                }
            } else {
                response = try await sessions.respond(to: request, chainingTo: next).get()
            }
            if let lifetime = request.storage[SessionCacheDriver.CookieLifetime.self], var cookie = response.cookies[cookieName],
                !cookie.string.isEmpty
            {
                cookie.maxAge = lifetime
                response.cookies[cookieName] = cookie
            }
            return response
        }
    }

    extension Request {
        /// The lease of the session's lock that `app.sessionCache.middleware()` holds for this
        /// request: pass it as `lease:` to the store's writes, so that a request that lost its lock
        /// cannot write over its successor's. Nil without locks, for a passive request, or without
        /// a session cookie.
        ///
        /// ```swift
        /// try await request.sessionStore.appendTurn(id, user: text, assistant: answer, lease: request.sessionLease)
        /// ```
        public var sessionLease: LockLease? { storage[SessionCacheDriver.LeaseKey.self] }
    }

    /// A store or lock error as Vapor's `Abort` (an `AbortError`) with the status and fixed text of
    /// its `WebAnswer`; server faults are logged (never with a session id). Other errors as they are.
    func abort(for error: any Error, logger: Logger) -> any Error {
        guard let answer = WebAnswer(error) else { return error }
        if answer.isServerFault { logger.error("session store unavailable", metadata: ["error": "\(error)"]) }
        return Abort(HTTPResponseStatus(statusCode: answer.status), reason: answer.message)
    }
#endif  // Vapor
