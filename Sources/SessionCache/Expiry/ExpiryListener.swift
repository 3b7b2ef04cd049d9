import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Tracing

/// Runs the application's cleanup hook once for every session that ends (idle timeout, absolute
/// lifetime, or deletion), across all instances, with the session's data as it was.
///
/// Every app instance runs one, as a swift-service-lifecycle `Service`, on a store configured with
/// ``SessionStoreConfiguration/expiryListener``. The listeners register in Redis and share the
/// store's buckets among themselves (rendezvous hashing); each visits its buckets when their next
/// session is due, when a keyspace notification names one of their timers, and at least every
/// ``ExpiryListenerConfiguration/fullSweepInterval``. A visit is one function call that claims the
/// bucket's ended sessions for this listener (owner token and lease) and returns their data.
///
/// Hooks run off the sweep, at most ``ExpiryListenerConfiguration/maxConcurrentHooks`` at once,
/// each attempt bounded by ``ExpiryListenerConfiguration/hookTimeout``. While a hook runs, its
/// claim is renewed; if a renewal finds the claim lost, the hook is cancelled. After the hook the
/// session is finalized (its keys and index entries removed) in batches, retried on transient
/// errors (finalize checks the owner, so a retry is safe). The hook runs exactly once unless the
/// claiming instance dies during it; then another instance runs it again after the lease
/// (``ExpiredSession/attempt`` tells).
///
/// ```swift
/// let listener = ExpiryListener(store: store) { expired in
///     try await sandboxes.release(for: expired.session.id)
/// }
/// let group = ServiceGroup(services: [listener], logger: logger)
/// try await group.run()
/// ```
public final class ExpiryListener: Service {
    /// The cleanup hook. One that throws or times out is logged and tried again, at most
    /// ``ExpiryListenerConfiguration/maxHookAttempts`` times in all. A hook is cancelled when its
    /// claim is lost (another instance then runs it).
    public typealias Hook = @Sendable (ExpiredSession) async throws -> Void
    /// The warning hook (see ``SessionStoreConfiguration/expiryWarningLead``).
    public typealias WarningHook = @Sendable (ExpiryWarning) async throws -> Void

    /// A claimed session with its data, ready for its hook.
    struct EndedSession: Sendable {
        let id: String
        let attempt: Int
        let record: SessionRecord
        let messages: [RESPReply]
    }

    struct State: Sendable {
        var schedule: SweepSchedule
        /// Every claim this listener holds, from its visit to its finalize.
        var claims: ClaimLedger<LostSignal>
    }

    let store: ExpiryStore
    let configuration: ExpiryListenerConfiguration
    let onExpiry: Hook
    let onWarning: WarningHook?
    let metrics: ExpiryMetrics
    let state: LockedState<State>
    let sweepWakeup = Wakeup()
    /// Ends hooks (and warning hooks) that run past ``ExpiryListenerConfiguration/hookTimeout``.
    let hookDeadlines: HookDeadlines
    let finalizeWakeup = Wakeup()
    /// Sessions claimed since the notification gate last looked.
    let recentClaims = Atomic(0)
    /// Identifies this listener's claims and registration.
    let token = "listener-" + SessionID.make(bucket: 0)

    /// A listener for `store`'s sessions. Nothing starts before ``run()``.
    public init(
        store: SessionStore, configuration: ExpiryListenerConfiguration = ExpiryListenerConfiguration(),
        onWarning: WarningHook? = nil, onExpiry: @escaping Hook
    ) {
        self.store = ExpiryStore(store)
        self.configuration = configuration
        self.onExpiry = onExpiry
        self.onWarning = onWarning
        self.metrics = ExpiryMetrics(factory: configuration.metricsFactory)
        self.hookDeadlines = HookDeadlines(forTimeout: configuration.hookTimeout)
        var schedule = SweepSchedule(fullSweepInterval: configuration.fullSweepInterval)
        // Until the registry answers, this listener assumes it is alone.
        schedule.assign(Set(0..<store.keyspace.bucketCount))
        self.state = LockedState(State(schedule: schedule, claims: ClaimLedger(lease: configuration.claimLease)))
    }

    var keyspace: SessionKeyspace { store.keyspace }
    var logger: Logger { configuration.logger }

    /// Throws what ``run()`` would throw at once for its configuration: for a framework that starts
    /// the listener in the background and must fail its start-up instead.
    ///
    /// - Throws: ``SessionError/invalidConfiguration(_:)`` when the store is not configured for a
    ///   listener (``SessionStoreConfiguration/expiryListener``) or the configuration is invalid.
    public func validate() throws(SessionError) {
        try configuration.validate()
        guard store.isListenerMode else {
            throw SessionError.invalidConfiguration("an ExpiryListener needs a store with expiryListener = true")
        }
    }

    /// Listens and sweeps until the task is cancelled or a graceful shutdown is requested; then
    /// stops claiming, lets running hooks finish, finalizes their sessions and leaves the registry.
    ///
    /// - Throws: ``SessionError/invalidConfiguration(_:)`` when the store is not configured for a
    ///   listener (``SessionStoreConfiguration/expiryListener``).
    public func run() async throws {
        try validate()
        let stopping = Atomic(false)
        let subscriber = HiredisSubscriber(configuration: store.redis.configuration)
        let notifications = configuration.keyspaceNotifications ? await enableNotifications() : false
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                background.addTask { try? await subscriber.run() }
                let pattern = self.keyspace.timerNotificationPattern(database: self.store.redis.configuration.database)
                background.addTask {
                    if notifications {
                        // Remembered by the subscriber even when the first confirmation is late.
                        try? await subscriber.subscribe(patterns: [pattern])
                    }
                    await self.collectNotifications(from: subscriber)
                }
                if notifications, configuration.pausesNotificationsWhenBusy {
                    background.addTask { await self.notificationGateLoop(subscriber, pattern: pattern) }
                }
                background.addTask { await self.registryLoop() }
                background.addTask { await self.renewalLoop() }
                background.addTask { await self.hookDeadlines.run() }
                let hooksDone = Flag()
                await withTaskGroup(of: Void.self) { finalizer in
                    finalizer.addTask { await self.finalizerLoop(until: { hooksDone.isSet }) }
                    await withDiscardingTaskGroup { work in
                        await self.sweepLoop(work: &work, isStopping: { stopping.load(ordering: .relaxed) })
                    }
                    // The finalizer ends after the pass it may be in: cancelled in the middle of a
                    // call, it could leave sessions claimed until their lease ran out (and then
                    // another listener would run their hooks again).
                    hooksDone.set()
                    self.finalizeWakeup.signal()
                }
                // Every hook has finished: finalize what they left, then stop the helpers.
                await self.finalizeRemaining()
                await subscriber.close()
                background.cancelAll()
            }
        } onGracefulShutdown: {
            stopping.store(true, ordering: .relaxed)
            self.sweepWakeup.signal()
        }
        _ = try? await store.register(token: token, lifetime: .zero)
        await subscriber.close()
    }
}
