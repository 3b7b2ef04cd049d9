import CoreMetrics
import Logging
import Tracing

/// How ``SessionLock`` leases, waits and shares sessions between tabs.
public struct SessionLockConfiguration: Sendable {
    /// How concurrent tabs of one user share a session.
    public enum Policy: Sendable, Hashable {
        /// One shared session, every tab's requests serialized (the default).
        case serializeTabs
        /// One session per tab: each tab locks only against itself (pass `tab:`), so tabs never wait
        /// for each other. Give each tab its own session for its data.
        case sessionPerTab
        /// The newest tab wins: acquiring takes the lock over at once, bumping the fencing token, so
        /// the older tab's later writes are refused.
        case activeTabWins
    }

    /// How tabs share a session.
    public var policy: Policy = .serializeTabs
    /// How long a lease lasts without renewal.
    public var lease: Duration = .seconds(5)
    /// How long ``SessionLock/acquire(_:tab:timeout:)`` waits by default.
    public var waitTimeout: Duration = .seconds(10)
    /// A waiter asks again at least this often (besides being woken on release), so a lost wake-up
    /// costs at most this, and a waiter whose process died is skipped after three times this.
    public var waiterHeartbeat: Duration = .milliseconds(500)
    /// Where lost leases and unavailable wake-ups are logged.
    /// Defaults to the `LoggingSystem` the application bootstrapped.
    public var logger = Logger(label: "session-lock")
    /// `session.lock.acquisitions`, `session.lock.wait` (timer), `session.lock.renewals`,
    /// `session.lock.leases_lost`; the store counts `session.lock.stale_writes`.
    /// Defaults to the factory the application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory
    /// Spans `session.lock.acquire` and `session.lock.release` (client spans, with the session id's
    /// prefix, the tab and, once granted, the fencing token), and `session.lock.hold` around
    /// ``SessionLock/withLock(_:tab:timeout:_:)``: its acquire, its release and what the body does
    /// are its children. Defaults to the tracer the application bootstrapped
    /// (`InstrumentationSystem.bootstrap`).
    public var tracer: any Tracer = InstrumentationSystem.tracer

    /// The defaults (5 s lease, 10 s wait) with `policy`.
    public init(policy: Policy = .serializeTabs) {
        self.policy = policy
    }
}
