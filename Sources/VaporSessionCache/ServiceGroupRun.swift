#if Vapor
    import Logging
    import NIOConcurrencyHelpers
    import ServiceLifecycle

    /// A `ServiceGroup` run in the background between a framework's start and stop callbacks (Vapor's
    /// lifecycle has no task to run it in): started once, stopped gracefully, its error logged.
    final class ServiceGroupRun: Sendable {
        private let running = NIOLockedValueBox<(group: ServiceGroup, task: Task<Void, Never>)?>(nil)

        /// Runs `services`; shutdown is in their reverse order. A second start does nothing.
        func start(_ services: [any Service], logger: Logger) {
            running.withLockedValue { running in
                guard running == nil else { return }
                let group = ServiceGroup(
                    configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], logger: logger))
                let task = Task {
                    do {
                        try await group.run()
                    } catch {
                        logger.error("the session cache's services stopped", metadata: ["error": "\(error)"])
                    }
                }
                running = (group, task)
            }
        }

        /// Triggers the graceful shutdown and waits until every service has returned.
        func stop() async {
            guard let (group, task) = running.withLockedValue({ $0 }) else { return }
            await group.triggerGracefulShutdown()
            await task.value
        }
    }
#endif  // Vapor
