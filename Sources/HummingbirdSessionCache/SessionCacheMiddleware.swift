#if Hummingbird
    import Foundation
    import HiredisNIO
    import Hummingbird
    import Logging
    import SessionCache

    /// Sessions for a Hummingbird app, from a cookie, on `SessionStore`.
    ///
    /// For each request the middleware reads the session cookie and picks the session up in one round
    /// trip (`resume`: checked alive, timer slid), puts it in `context.session` (``WebSession``), runs
    /// the handler, writes the metadata that changed, and sets or clears the cookie:
    /// `HttpOnly`, `Secure`, `SameSite=Lax` and a `Max-Age` up to the session's absolute deadline by
    /// default (``CookieOptions``).
    ///
    /// - A malformed, unknown or ended cookie is no error: the request goes on without a session.
    ///   The cookie is left as it is (clearing it could overwrite the cookie a concurrent log-in
    ///   just set); log-out and `destroy()` clear it.
    /// - Redis errors fail closed: the request gets `503 Service Unavailable` and the error is logged;
    ///   nobody is logged out because Redis hiccuped.
    /// - With `locks`, each request that has a session holds the session's lock while the handler
    ///   runs (two tabs' requests take turns; the lease is renewed while a slow handler runs);
    ///   `context.session.lease` fences the handler's writes. A lock not granted within the lock's
    ///   wait timeout answers `409 Conflict`; a session that ended during the request, `401`.
    ///
    /// ```swift
    /// let router = Router(context: BasicSessionCacheRequestContext.self)
    /// router.add(middleware: SessionCacheMiddleware(store: store))
    /// router.post("/login") { request, context in
    ///     try await context.session.logIn(user: "alice")
    ///     return HTTPResponse.Status.ok
    /// }
    /// ```
    public struct SessionCacheMiddleware<Context: SessionCacheRequestContext>: RouterMiddleware {
        /// The session cookie's attributes.
        public struct CookieOptions: Sendable {
            public var name = "session"
            public var path = "/"
            public var domain: String? = nil
            /// Only over HTTPS (turn off for plain-HTTP development only).
            public var secure = true
            public var sameSite: Cookie.SameSite = .lax

            public init(name: String = "session", secure: Bool = true) {
                self.name = name
                self.secure = secure
            }
        }

        let store: SessionStore
        let locks: SessionLock?
        let cookie: CookieOptions
        let isPassive: @Sendable (Request) -> Bool
        let tab: @Sendable (Request) -> String?
        let redeemsImported: Bool

        /// Sessions from `store`; with `locks`, one request per session at a time (per tab, when
        /// the lock's policy is per tab and `tab` names the request's). Requests for which
        /// `passive` is true (a page polling for news, say) read the session without sliding its
        /// timer and without the lock: they must not keep an idle session alive.
        ///
        /// With `redeemsImported`, a cookie that holds the id of a session imported from another
        /// session system (`session-cache import`, `SessionStore.importSession(_:)`) picks that
        /// session up once, under its new id: the cookie is replaced. Give `cookie` the other
        /// system's cookie name (hummingbird-auth's is `SESSION_ID`).
        public init(
            store: SessionStore, locks: SessionLock? = nil, cookie: CookieOptions = CookieOptions(),
            passive: @escaping @Sendable (Request) -> Bool = { _ in false },
            tab: @escaping @Sendable (Request) -> String? = { _ in nil }, redeemsImported: Bool = false
        ) {
            self.store = store
            self.locks = locks
            self.cookie = cookie
            self.isPassive = passive
            self.tab = tab
            self.redeemsImported = redeemsImported
        }

        public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response
        {
            let presented = request.cookies[cookie.name]?.value
            let passive = isPassive(request)
            var loaded: Session?
            if let presented, !presented.isEmpty {
                do {
                    if redeemsImported, !store.isWellFormed(presented), ImportedSession.isValidFormerID(presented) {
                        loaded = try await store.redeemImported(presented)  // a new id: the cookie changes
                    } else if passive {
                        loaded = try await store.get(presented)
                    } else if case .resumed(let session, _) = try await store.resume(presented) {
                        loaded = session
                    }
                } catch SessionError.invalidID {
                    loaded = nil  // a forged or foreign cookie: no session
                } catch {
                    throw answer(error, context: context)
                }
            }
            let session = context.session
            // A cookie that finds no session (stale, forged, or one that a concurrent log-in or a
            // redemption just replaced) is left alone: clearing it could overwrite the new cookie
            // that the other request set meanwhile. Only a redeemed import changes it here.
            let cookieChanged = loaded.map { $0.id != presented } ?? false
            session.load(store: store, session: loaded, cookieChanged: cookieChanged)

            var response: Response
            do {
                if let locks, !passive, let id = loaded?.id {
                    // withLock renews the lease while the handler runs, cancels the handler if the
                    // lease is lost (its fenced writes are refused from then on) and always releases.
                    // Its body runs in a child task that ends before withLock returns: `next` does
                    // not outlive this call, and only that task calls it.
                    response = try await withoutActuallyEscaping(next) { next in
                        nonisolated(unsafe) let next = next
                        return try await locks.withLock(id, tab: tab(request)) { lease in
                            // Read again under the lock: what the previous holder wrote is what this
                            // request's changes are made to (the read before the lock may be stale).
                            guard let current = try await store.get(id) else { throw SessionError.notFound }
                            session.reload(current)
                            session.setLease(lease)
                            return try await self.respond(to: request, context: context, session: session, next: next)
                        }
                    }
                } else {
                    response = try await respond(to: request, context: context, session: session, next: next)
                }
            } catch let error as SessionError {
                throw answer(error, context: context)
            } catch let error as LockError {
                throw answer(error, context: context)
            }

            if session.cookieChanged {
                if let current = session.current {
                    response.setCookie(
                        Cookie(
                            name: cookie.name, value: current.id, maxAge: current.cookieMaxAge, domain: cookie.domain, path: cookie.path,
                            secure: cookie.secure,
                            httpOnly: true, sameSite: cookie.sameSite))
                } else {
                    response.setCookie(
                        Cookie(
                            name: cookie.name, value: "", maxAge: 0, domain: cookie.domain, path: cookie.path, secure: cookie.secure,
                            httpOnly: true, sameSite: cookie.sameSite))
                }
            }
            return response
        }

        /// The handler, then the metadata it changed, in one write (fenced by the request's lease).
        private func respond(
            to request: Request, context: Context, session: WebSession, next: (Request, Context) async throws -> Response
        ) async throws -> Response {
            let response = try await next(request, context)
            if let id = session.id {
                let changes = session.changes
                if !changes.isEmpty { try await store.setMetadata(id, changes, lease: session.lease) }
            }
            return response
        }

        /// The error as an HTTP error: a fixed text for the client; server faults logged (never
        /// with the session id).
        private func answer(_ error: any Error, context: Context) -> any Error {
            guard let answer = WebAnswer(error) else { return error }
            if answer.isServerFault { context.logger.error("session store unavailable", metadata: ["error": "\(error)"]) }
            return HTTPError(HTTPResponse.Status(code: answer.status), message: answer.message)
        }
    }
#endif  // Hummingbird
