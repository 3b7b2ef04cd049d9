#if Vapor
    import Logging
    import NIOConcurrencyHelpers
    import SessionCache
    import Vapor

    /// Vapor's sessions middleware on the session cache, made by
    /// `app.sessionCache.middleware(passive:tab:)`: use it instead of `app.sessions.middleware`.
    ///
    /// - With locks, a request whose cookie names a session holds the session's lock (the tab's,
    ///   with a per-tab policy) from before the session is read until after its changes are
    ///   written: two tabs' requests of one session take turns, and each sees what the other
    ///   wrote. The lease is renewed while a slow handler runs; once it is lost, the handler's
    ///   fenced writes (the driver's, and the store's with `request.sessionLease`) are refused.
    ///   Passive requests take no lock.
    /// - The cookie is set when the id is new (a session created, a log-in), with a `Max-Age` up
    ///   to the session's absolute deadline by Redis's clock, and cleared by `destroy()`. A cookie
    ///   that finds no session is left as it is: clearing it, or setting the same id again, could
    ///   overwrite the cookie that a concurrent log-in just set.
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
        /// The configured cookie's factory: the expired cookie of `destroy()` gets its attributes.
        let cookieFactory: @Sendable (SessionID) -> HTTPCookies.Value
        let store: SessionStore
        let locks: SessionLock?
        let isPassive: @Sendable (Request) -> Bool
        let tab: @Sendable (Request) -> String?

        public func respond(to request: Request, chainingTo next: any AsyncResponder) async throws -> Response {
            let presented = request.cookies[cookieName]?.string
            let response: Response
            do {
                if let locks, let id = presented, store.isWellFormed(id), !isPassive(request) {
                    response = try await respondLocked(id, locks, request, next)
                } else {
                    response = try await sessions.respond(to: request, chainingTo: next).get()
                }
            } catch {
                throw abort(for: error, logger: request.logger)
            }
            setCookie(of: response, presented: presented, request)
            return response
        }

        /// The request under the session's lock, from before the read to after the write.
        private func respondLocked(
            _ id: String, _ locks: SessionLock, _ request: Request, _ next: any AsyncResponder
        ) async throws -> Response {
            // Vapor's handler runs in a task of its own, which losing the lease cannot cancel: when
            // it finishes anyway, its response stands (its fenced writes held, or it failed), so that
            // what it did (a log-in's new id) reaches the browser.
            let finished = NIOLockedValueBox<Response?>(nil)
            do {
                return try await locks.withLock(id, tab: tab(request)) { lease in
                    request.storage[SessionCacheDriver.LeaseKey.self] = lease
                    let response = try await sessions.respond(to: request, chainingTo: next).get()
                    finished.withLockedValue { $0 = response }
                    return response
                }
            } catch LockError.leaseLost {
                guard let response = finished.withLockedValue({ $0 }) else { throw LockError.leaseLost }
                return response
            }
        }

        /// Vapor sets the session cookie on every response that has a session. Only a new id
        /// (created, logged in, redeemed) gets one, with the session's lifetime; the same id again,
        /// or a clearing because nothing was found or stored, is left out: a request that began
        /// before a concurrent log-in must not overwrite or clear the cookie with the new id.
        /// `destroy()` clears the cookie with the configured attributes (Vapor's own expired
        /// cookie has no path, so a log-out under `/api` would leave the `/` cookie).
        private func setCookie(of response: Response, presented: String?, _ request: Request) {
            guard var cookie = response.cookies[cookieName] else { return }
            if cookie.string.isEmpty {
                if request.storage[SessionCacheDriver.NothingStored.self] == true {
                    response.cookies[cookieName] = nil
                } else {
                    response.cookies[cookieName] = cookieFactory(SessionCacheDriver.nothingStored)
                }
            } else if cookie.string == presented {
                response.cookies[cookieName] = nil
            } else if let lifetime = request.storage[SessionCacheDriver.CookieLifetime.self] {
                cookie.maxAge = lifetime
                response.cookies[cookieName] = cookie
            }
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
