import CoreMetrics
import Logging
import Tracing

/// How a ``SessionStore`` names its keys, times sessions out and limits what they hold.
public struct SessionStoreConfiguration: Sendable {
    /// Limits checked before anything is written; a write past one throws and changes nothing.
    public struct Limits: Sendable {
        /// The largest metadata value, JSON-encoded.
        public var maxMetadataValueBytes = 16 * 1024
        /// The largest message content.
        public var maxMessageBytes = 64 * 1024
        /// The most a session may hold: metadata values plus the messages in its window.
        public var maxSessionBytes = 1024 * 1024

        /// 16 KiB per metadata value, 64 KiB per message, 1 MiB per session.
        public init() {}
    }

    /// Prefix of every key, so several applications can share one Redis: `<namespace>:session:{id}`.
    public var namespace = "session"
    /// The timeout mode of sessions created without one.
    public var defaultMode: TimeoutMode = .standard
    /// How long a session may live at most, whatever its activity.
    public var absoluteLifetime: Duration = .seconds(12 * 3600)
    /// A session idle longer than this is returned by ``SessionStore/resume(_:user:)`` as
    /// ``SessionState/resumed`` (a returning user), otherwise as ``SessionState/active``.
    public var resumeThreshold: Duration = .seconds(5 * 60)
    /// How many recent messages a session keeps (older ones are dropped in Redis).
    public var messageWindow = 20
    /// How much longer than its idle timer a session's data stays readable, for the expiry hook.
    public var expiryGrace: Duration = .seconds(60)
    /// Sizes past which writes are refused.
    public var limits = Limits()
    /// Whether ``SessionStore/delete(_:)`` hands sessions to the ``ExpiryListener`` (cleanup hook
    /// with reason ``ExpiryReason/deleted``) instead of removing their keys at once. The session is
    /// dead immediately either way. Turn it on, on every instance, when an expiry listener runs.
    public var cleanupHooks = false
    /// Whether lifecycle events (created, resumed, rotated, deleted, expired) are published on
    /// `<namespace>:events` as JSON, for `session-cache watch` and other observers. Each costs one
    /// PUBLISH in the round trip the operation makes anyway.
    public var publishEvents = true
    /// When set, the ``ExpiryListener`` warns this long before a session's idle expiry (once per
    /// period of activity), so the application can tell the user. Every instance's store needs the
    /// same value: it schedules the warnings.
    public var expiryWarningLead: Duration? = nil
    /// How long a full touch's view of a session's timing is reused, so that the following touches
    /// cost one Redis command instead of a script (see the README). A timeout-mode change made on
    /// another instance reaches this instance's touches within this time. `.zero` disables it.
    public var touchCacheLifetime: Duration = .seconds(5)
    /// Debug-level log of every operation (never the full session id).
    public var logger = Logger(label: "session-store", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Counters and timers per operation: `session.operations`, `session.errors`,
    /// `session.operation.duration`, dimension `operation`.
    /// Defaults to the factory the application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory
    /// A span per operation, following the database client conventions. Defaults to the tracer the
    /// application bootstrapped (`InstrumentationSystem.bootstrap`).
    public var tracer: any Tracer = InstrumentationSystem.tracer

    /// A configuration with every default, for `namespace`.
    public init(namespace: String = "session") {
        self.namespace = namespace
    }
}
