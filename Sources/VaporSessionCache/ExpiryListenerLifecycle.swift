#if Vapor
    import SessionCache
    import Vapor

    /// Runs an `ExpiryListener` for the lifetime of a Vapor application: started when the app has
    /// booted, stopped gracefully when it shuts down (claiming stops, running hooks finish, their
    /// sessions are finalized; nothing is cut to run again elsewhere). With
    /// `app.sessionCache.onExpiry` the application's session cache runs the listener instead.
    ///
    /// A configuration the listener cannot run with fails the app's boot; an error while it runs is
    /// logged on the application's logger.
    ///
    /// ```swift
    /// app.lifecycle.use(ExpiryListenerLifecycle(ExpiryListener(store: store) { expired in ... }))
    /// ```
    public final class ExpiryListenerLifecycle: LifecycleHandler {
        private let listener: ExpiryListener
        private let running = ServiceGroupRun()

        public init(_ listener: ExpiryListener) {
            self.listener = listener
        }

        // Synchronous, so that `boot()` (VaporTesting's `app.testing()`) starts it as `asyncBoot()`
        // does; the async variant defaults to this one.
        public func didBoot(_ application: Application) throws {
            try listener.validate()
            running.start([listener], logger: application.logger)
        }

        public func shutdownAsync(_ application: Application) async {
            // Vapor stops the HTTP server after its lifecycle handlers: first here, so that no
            // request is served while running hooks finish.
            await application.server.shutdown()
            await running.stop()
        }

        /// The deprecated synchronous shutdown cannot wait: it starts the graceful shutdown.
        public func shutdown(_ application: Application) {
            let running = running
            Task { await running.stop() }
        }
    }
#endif  // Vapor
