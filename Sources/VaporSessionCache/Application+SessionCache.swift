#if Vapor
    import HiredisNIO
    import NIOConcurrencyHelpers
    import ServiceLifecycle
    import SessionCache
    import Vapor

    extension Application {
        /// The application's session cache: its Redis client, store and locks, run in the
        /// application's lifecycle (see ``SessionCacheAccess``).
        ///
        /// ```swift
        /// try app.sessionCache.configure(
        ///     redis: HiredisConfiguration(url: "redis://127.0.0.1:6379"),
        ///     store: SessionStoreConfiguration(namespace: "app"))
        /// app.sessions.use(.sessionCache(authenticating: User.self))
        /// app.middleware.use(app.sessionCache.middleware())
        /// ```
        public var sessionCache: SessionCacheAccess { SessionCacheAccess(application: self) }

        /// Where `app.sessionCache` configures and reaches the session cache.
        ///
        /// ``configure(redis:store:locks:)`` makes the client, the store and the locks once, and
        /// registers one lifecycle handler that runs them (and the expiry listener, when
        /// ``onExpiry(configuration:onWarning:_:)`` gave hooks) in a `ServiceGroup` from the
        /// application's boot to its shutdown. Shutdown is graceful and in reverse order: running
        /// hooks finish and their sessions are finalized, then the locks stop, then the client.
        public struct SessionCacheAccess: Sendable {
            let application: Application

            /// Makes the Redis client, the store and (unless `locks` is nil) the locks, and runs them
            /// in the application's lifecycle. Call it once, while configuring the application.
            ///
            /// - Throws: `SessionError.invalidConfiguration` for a configuration the
            ///   client or the store refuses, or when called a second time.
            public func configure(
                redis: HiredisConfiguration, store storeConfiguration: SessionStoreConfiguration = SessionStoreConfiguration(),
                locks lockConfiguration: SessionLockConfiguration? = SessionLockConfiguration()
            ) throws(SessionError) {
                let client: HiredisClient
                do {
                    client = try HiredisClient(configuration: redis)
                } catch {
                    throw SessionError.invalidConfiguration("the Redis client refused its configuration: \(error)")
                }
                let store = try SessionStore(client: client, configuration: storeConfiguration)
                let locks = lockConfiguration.map { SessionLock(store: store, configuration: $0) }
                let parts = Parts(client: client, store: store, locks: locks)
                let installed = application.locks.lock(for: PartsKey.self).withLock { () -> Bool in
                    guard application.storage[PartsKey.self] == nil else { return false }
                    application.storage[PartsKey.self] = parts
                    return true
                }
                guard installed else {
                    throw SessionError.invalidConfiguration("app.sessionCache.configure was called twice")
                }
                application.lifecycle.use(SessionCacheLifecycle(parts))
            }

            /// Runs `onExpiry` once per ended session across every instance (an `ExpiryListener` in
            /// the application's lifecycle). Call it while configuring, before the boot. Needs a store configured with
            /// `SessionStoreConfiguration.expiryListener`; a configuration the listener cannot run
            /// with fails the application's boot.
            ///
            /// ```swift
            /// app.sessionCache.onExpiry { expired in
            ///     try await uploads.remove(for: expired.session.id)
            /// }
            /// ```
            public func onExpiry(
                configuration: ExpiryListenerConfiguration = ExpiryListenerConfiguration(),
                onWarning: ExpiryListener.WarningHook? = nil, _ onExpiry: @escaping ExpiryListener.Hook
            ) {
                let listener = ExpiryListener(store: store, configuration: configuration, onWarning: onWarning, onExpiry: onExpiry)
                let added = parts.listeners.withLockedValue { listeners in
                    guard let unstarted = listeners else { return false }
                    listeners = unstarted + [listener]
                    return true
                }
                // Hooks given after the boot would never run: said loudly, once, at the call.
                if !added { application.logger.error("app.sessionCache.onExpiry was called after the boot: its hooks never run") }
            }

            /// The session store (for messages, metadata, users' session lists, log-out everywhere).
            public var store: SessionStore { parts.store }

            /// The session locks, unless ``configure(redis:store:locks:)`` was given `locks: nil`.
            public var locks: SessionLock? { parts.locks }

            /// The Redis client the store uses.
            public var client: HiredisClient { parts.client }

            /// The middleware for sessions: Vapor's sessions middleware on the driver, with the
            /// session's lock held around each request (when there are locks) and the cookie's
            /// `Max-Age` set to the session's absolute deadline by Redis's clock. Use it instead of
            /// `app.sessions.middleware`, after the sessions' driver and configuration are set (it
            /// takes them as they are).
            ///
            /// - Parameters:
            ///   - passive: Requests that must not keep the session alive (a page polling for
            ///     news): they take no lock. Give the driver the same closure.
            ///   - tab: The request's tab, for a lock whose policy is per tab (a header the page
            ///     sends, say); nil for one lock per session.
            public func middleware(
                passive: @escaping @Sendable (Request) -> Bool = { _ in false },
                tab: @escaping @Sendable (Request) -> String? = { _ in nil }
            ) -> SessionCacheMiddleware {
                SessionCacheMiddleware(
                    sessions: application.sessions.middleware, cookieName: application.sessions.configuration.cookieName,
                    cookieFactory: application.sessions.configuration.cookieFactory, store: store, locks: locks, isPassive: passive,
                    tab: tab)
            }

            var parts: Parts {
                guard let parts = application.locks.lock(for: PartsKey.self).withLock({ application.storage[PartsKey.self] }) else {
                    fatalError("The session cache is not configured: call app.sessionCache.configure(redis:store:) first.")
                }
                return parts
            }
        }
    }

    extension Application.Sessions.Provider {
        /// Sessions on the application's session cache (`app.sessionCache`).
        ///
        /// ```swift
        /// app.sessions.use(.sessionCache)
        /// ```
        public static var sessionCache: Self { .sessionCache(userKey: nil) }

        /// Sessions on the application's session cache whose user is the `User` that Vapor's
        /// `SessionAuthenticator` stores: a log-in binds the session to its user under a new id.
        ///
        /// ```swift
        /// app.sessions.use(.sessionCache(authenticating: User.self))
        /// ```
        public static func sessionCache<User: SessionAuthenticatable>(
            authenticating user: User.Type, redeemsImported: Bool = false,
            passive: @escaping @Sendable (Request) -> Bool = { _ in false }
        ) -> Self {
            .sessionCache(userKey: SessionCacheDriver.userKey(for: User.self), redeemsImported: redeemsImported, passive: passive)
        }

        static func sessionCache(
            userKey: String?, redeemsImported: Bool = false, passive: @escaping @Sendable (Request) -> Bool = { _ in false }
        ) -> Self {
            .init { application in
                application.sessions.use { application in
                    SessionCacheDriver(
                        store: application.sessionCache.store, userKey: userKey, redeemsImported: redeemsImported, passive: passive)
                }
                application.sessions.configuration = SessionCacheDriver.cookieConfiguration()
            }
        }
    }

    extension Request {
        /// The application's session store (`app.sessionCache`).
        public var sessionStore: SessionStore { application.sessionCache.store }
    }

    /// What `configure` made, kept in the application's storage.
    final class Parts: Sendable {
        let client: HiredisClient
        let store: SessionStore
        let locks: SessionLock?
        /// The listeners to start at boot; nil once they started.
        let listeners = NIOLockedValueBox<[ExpiryListener]?>([])

        init(client: HiredisClient, store: SessionStore, locks: SessionLock?) {
            self.client = client
            self.store = store
            self.locks = locks
        }
    }

    struct PartsKey: StorageKey, LockKey {
        typealias Value = Parts
    }

    /// Runs the client, the locks and the listeners in one `ServiceGroup` from boot to shutdown.
    final class SessionCacheLifecycle: LifecycleHandler {
        private let parts: Parts
        private let running = ServiceGroupRun()

        init(_ parts: Parts) {
            self.parts = parts
        }

        // Synchronous, so that both `boot()` (which VaporTesting's `app.testing()` calls) and
        // `asyncBoot()` start the services; the async variant defaults to this one.
        func willBoot(_ application: Application) throws {
            let listeners = parts.listeners.withLockedValue { listeners in
                defer { listeners = nil }
                return listeners ?? []
            }
            for listener in listeners { try listener.validate() }
            // Shut down in reverse: listeners (their hooks use the store), locks, then the client.
            var services: [any Service] = [parts.client]
            if let locks = parts.locks { services.append(locks) }
            services += listeners
            running.start(services, logger: application.logger)
        }

        func shutdownAsync(_ application: Application) async {
            // Vapor stops the HTTP server after its lifecycle handlers: stopped first here, so that
            // no request meets a store whose client is gone while running hooks finish.
            await application.server.shutdown()
            await running.stop()
        }

        /// The deprecated synchronous shutdown cannot wait: it starts the graceful shutdown (hooks
        /// that run when the process exits are cut, and run again on another instance).
        func shutdown(_ application: Application) {
            let running = running
            Task { await running.stop() }
        }
    }
#endif  // Vapor
