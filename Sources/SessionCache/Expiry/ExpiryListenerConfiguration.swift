import CoreMetrics
import Logging

/// How an ``ExpiryListener`` finds and handles ended sessions.
public struct ExpiryListenerConfiguration: Sendable {
    /// How often the deadline index is swept. Expired-key events come when Redis actually deletes a
    /// key (seconds to minutes late under load) and are lost while nobody listens; the sweep bounds
    /// the lateness whatever happens to them.
    public var sweepInterval: Duration = .milliseconds(100)
    /// The most sessions one sweep takes (oldest first); a full batch is followed by another at once.
    public var sweepBatchSize = 1000
    /// The most cleanup hooks running at once in this instance.
    public var maxConcurrentHooks = 256
    /// How long a claim on a session lasts: if this instance dies in the middle of a hook, another
    /// one runs it again after the lease (at-least-once in that case).
    public var claimLease: Duration = .seconds(30)
    /// How many times a throwing hook is tried, in all.
    public var maxHookAttempts = 3
    /// The pause before trying a throwing hook again (doubled each time).
    public var hookRetryDelay: Duration = .milliseconds(200)
    /// Whether to turn on expired-key notifications (`CONFIG SET notify-keyspace-events`) when they
    /// are off. Where CONFIG is refused (managed Redis), the listener warns once and relies on the sweep.
    public var enableKeyspaceNotifications = true
    /// Where the listener logs: hook failures, lost notifications, CONFIG refusals.
    public var logger = Logger(label: "expiry-listener", factory: { _ in SwiftLogNoOpLogHandler() })
    /// `session.expiry.hooks` (dimension `reason`), `session.expiry.lateness` (timer: due to hook
    /// start), `session.expiry.claims_lost`, `session.expiry.sweep_batch` (recorder), `session.expiry.hook_failures`.
    /// Defaults to the factory the application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory

    /// The defaults: a 100 ms sweep, batches of 1,000, a 30 s claim lease, 3 hook attempts.
    public init() {}
}
