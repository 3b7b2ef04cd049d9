import CoreMetrics
import Logging
import Tracing

/// How an ``ExpiryListener`` finds ended sessions and runs their hooks.
public struct ExpiryListenerConfiguration: Sendable {
    /// How often the listener checks which of its buckets are due. A bucket is visited when its next
    /// entry is due (learnt at its last visit), when a keyspace notification names it, and at least
    /// every ``fullSweepInterval``.
    public var sweepInterval: Duration = .milliseconds(100)
    /// Every bucket the listener owns is visited at least this often: sessions created or deleted by
    /// other instances since the last visit are found then, if no notification came first.
    public var fullSweepInterval: Duration = .seconds(1)
    /// The most sessions one visit of a bucket claims.
    public var claimBatchSize = 100
    /// The most cleanup hooks running at once in this instance; sessions are claimed only when a
    /// hook can start, so a slow hook holds back this instance's claims, not expiry everywhere.
    public var maxConcurrentHooks = 256
    /// How long a claim lasts without renewal. While a hook runs its claim is renewed every third of
    /// this; if this instance dies, another one claims the session again after the lease
    /// (at-least-once in that case, ``ExpiredSession/attempt`` tells).
    public var claimLease: Duration = .seconds(30)
    /// How long one run of a hook may take; past it the hook is cancelled and counted as a failure.
    /// (Checked every twentieth of it, between 10 ms and 1 s: the cancellation comes that much late
    /// at most.)
    public var hookTimeout: Duration = .seconds(60)
    /// How long a cancelled hook (past its timeout) may take to stop. A hook that ignores
    /// cancellation longer is abandoned: it may go on running, but its slot among
    /// ``maxConcurrentHooks`` is free again and the session is finalized with no further try (a
    /// second try would run it twice at once). Logged as an error, counted in
    /// `session.expiry.hooks_abandoned`.
    public var hookStopGrace: Duration = .seconds(10)
    /// How many times a failing (throwing or timed-out) hook is tried, in all, before the session is
    /// finalized anyway.
    public var maxHookAttempts = 3
    /// The pause before trying a failing hook again (doubled each time).
    public var hookRetryDelay: Duration = .milliseconds(200)
    /// How long a listener's registration lasts without renewal: when a listener dies, the others
    /// take over its buckets after this.
    public var registrationLifetime: Duration = .seconds(5)
    /// Whether the listener subscribes to Redis's expired-key notifications for the store's timers,
    /// so that a session whose end the sweep has not learnt yet (created or deleted since the
    /// bucket's last visit, with an earlier end than any it knew) is handled at once rather than at
    /// the next full visit (``fullSweepInterval``). Every listener receives every notification:
    /// at very high expiry rates they cost more CPU than they save.
    public var keyspaceNotifications = true
    /// Whether the listener pauses its keyspace notifications while it claims more sessions per
    /// ``sweepInterval`` than it owns buckets, and resumes them below half of that. At such rates
    /// every bucket is due at every sweep, so the notifications change nothing while every listener
    /// still receives all of them (measured: a quarter of the listeners' CPU at 10,000 hooks/s with
    /// three listeners). Checked every second; logged at info level when it changes.
    public var pausesNotificationsWhenBusy = true
    /// Whether to turn on keyspace notifications for expired keys (`CONFIG SET
    /// notify-keyspace-events`) when they are off. Where CONFIG is refused (managed Redis), the
    /// listener warns once and relies on the sweep.
    public var enableKeyspaceNotifications = true
    /// Where the listener logs: hook failures, lost claims, CONFIG refusals.
    /// Defaults to the `LoggingSystem` the application bootstrapped.
    public var logger = Logger(label: "expiry-listener")
    /// `session.expiry.hooks` (dimension `reason`), `session.expiry.lateness` (timer: due to hook
    /// start), `session.expiry.claims_lost`, `session.expiry.claim_batch` (recorder),
    /// `session.expiry.hook_failures`, `session.expiry.data_lost`.
    /// Defaults to the factory the application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory
    /// A span per cleanup hook (`session.expiry.hook`, with the reason, the redacted session id,
    /// the attempts and the outcome); spans the hook makes are its children.
    /// Defaults to the tracer the application bootstrapped (`InstrumentationSystem.bootstrap`).
    public var tracer: any Tracer = InstrumentationSystem.tracer

    /// The defaults: sweeps every 100 ms (each bucket at least every second), batches of 100, 256
    /// concurrent hooks, a 30 s claim lease, 60 s per hook, 3 attempts.
    public init() {}

    func validate() throws(SessionError) {
        if sweepInterval <= .zero || fullSweepInterval <= .zero || claimLease <= .zero || hookTimeout <= .zero
            || registrationLifetime <= .zero || hookStopGrace <= .zero
        {
            throw .invalidConfiguration("the expiry listener's intervals must be positive")
        }
        if claimBatchSize < 1 || maxConcurrentHooks < 1 || maxHookAttempts < 1 {
            throw .invalidConfiguration("claimBatchSize, maxConcurrentHooks and maxHookAttempts must be at least 1")
        }
    }
}
