import CoreMetrics
import Logging
import Tracing

/// How a ``SessionStore`` lays out its keys, times sessions out and limits what they hold.
///
/// Every instance of one application must use the same namespace, bucket count, listener mode
/// and warning lead: they describe the shared data, not the instance.
public struct SessionStoreConfiguration: Sendable {
    /// Limits checked before anything is written; a write past one throws and changes nothing.
    public struct Limits: Sendable {
        /// The largest metadata value, JSON-encoded.
        public var maxMetadataValueBytes = 16 * 1024
        /// The longest metadata key.
        public var maxMetadataKeyBytes = 128
        /// The most metadata keys a session may have.
        public var maxMetadataKeys = 256
        /// The largest message content.
        public var maxMessageBytes = 64 * 1024
        /// The most messages one call may append.
        public var maxMessagesPerCall = 100
        /// The longest agent type.
        public var maxAgentTypeBytes = 64
        /// The longest device label (``SessionStore/setDevice(_:label:)``).
        public var maxDeviceLabelBytes = 128
        /// The most a session may hold: its messages (as stored), metadata keys and values, and
        /// agent type. Checked after the message window is trimmed.
        public var maxSessionBytes = 1024 * 1024
        /// The most sessions one user may have; nil: no cap. Creating one more ends the user's
        /// least recently written session, as ``SessionStore/delete(_:)`` would (with an expiry
        /// listener its hook runs, reason `deleted`): one account cannot fill Redis, and the
        /// oldest device is logged out as services with a device limit do. Default 1,000.
        public var maxSessionsPerUser: Int? = 1000
        /// The most index entries one ``SessionStore/list(user:limit:)`` looks at: entries of
        /// sessions that ended by themselves are skipped until writes prune them, and this bounds
        /// the call's cost whatever the index holds. Default 1,000 (a `limit` above it is lowered).
        public var maxListScan = 1000

        /// 16 KiB per metadata value, 256 keys of at most 128 bytes, 64 KiB per message, 100
        /// messages per call, 1 MiB per session, 1,000 sessions per user.
        public init() {}
    }

    /// The longest a session may live, whatever its activity, per timeout mode.
    public struct AbsoluteLifetimes: Sendable, Hashable {
        /// For ``TimeoutMode/aggressive`` (5 minutes idle).
        public var aggressive: Duration = .seconds(12 * 3600)
        /// For ``TimeoutMode/standard`` (30 minutes idle).
        public var standard: Duration = .seconds(12 * 3600)
        /// For ``TimeoutMode/lenient`` (4 hours idle).
        public var lenient: Duration = .seconds(7 * 24 * 3600)
        /// For ``TimeoutMode/persistent`` (24 hours idle): conversations kept up to 30 days.
        public var persistent: Duration = .seconds(30 * 24 * 3600)
        /// For ``TimeoutMode/custom(_:)`` modes: this, or when nil the longer of 12 hours and twice
        /// the idle timeout.
        public var custom: Duration? = nil

        /// 12 hours for aggressive and standard, 7 days for lenient, 30 days for persistent.
        public init() {}

        /// The absolute lifetime of sessions in `mode`.
        public func lifetime(for mode: TimeoutMode) -> Duration {
            switch mode {
            case .aggressive: return aggressive
            case .standard: return standard
            case .lenient: return lenient
            case .persistent: return persistent
            case .custom(let idle): return custom ?? max(.seconds(12 * 3600), idle * 2)
            }
        }

        /// The longest of them (custom modes aside).
        var longest: Duration { [aggressive, standard, lenient, persistent, custom ?? .zero].max()! }
    }

    /// Prefix of every key, so several applications can share one Redis: `<namespace>:{<bucket>}:...`.
    /// Letters, digits, `_ - . :`.
    public var namespace = "session"
    /// How many buckets (Redis Cluster hash tags) sessions are spread over. Part of the data's layout:
    /// the same on every instance, and fixed while sessions exist.
    ///
    /// More buckets spread the data over more cluster slots; fewer make the expiry listener's
    /// batches larger (its calls handle the due sessions of many buckets at once, but each bucket
    /// costs a few commands). 256 suits clusters of up to a few dozen primaries.
    public var bucketCount = 256
    /// The timeout mode of sessions created without one.
    public var defaultMode: TimeoutMode = .standard
    /// The longest a session may live in each mode, whatever its activity. At most
    /// ``maximumLifetime``.
    public var absoluteLifetimes = AbsoluteLifetimes()
    /// The idle timeouts a ``TimeoutMode/custom(_:)`` mode may have; outside, the call is refused
    /// with ``SessionError/invalidTimeoutMode(_:)`` and nothing is written. Default 1 second to
    /// 30 days. (Unbounded, an idle timeout of centuries gave keys TTLs no index outlives.)
    public var customIdleTimeouts: ClosedRange<Duration> = .seconds(1) ... .seconds(30 * 24 * 3600)
    /// No absolute lifetime or custom idle timeout may exceed this: 10 years. Every deadline then
    /// stays far below 2^53 ms, where Lua's numbers stop being exact.
    public static let maximumLifetime: Duration = .seconds(3650 * 24 * 3600)
    /// A session idle longer than this is returned by ``SessionStore/resume(_:user:)`` as
    /// ``SessionState/resumed`` (a returning user), otherwise as ``SessionState/active``.
    public var resumeThreshold: Duration = .seconds(5 * 60)
    /// How many recent messages a session keeps (older ones are dropped in Redis).
    public var messageWindow = 20
    /// Whether ``ExpiryListener``s run (on at least one instance; usually on every one). Then every
    /// ended session (idle, past its absolute lifetime, or deleted) keeps its data until a listener
    /// has run its cleanup hook and finalized it, at most ``hookSafetyTTL`` past its absolute
    /// deadline; and the store keeps the indexes listeners work from. Set it on every instance.
    public var expiryListener = false
    /// With ``expiryListener``: how long past its absolute deadline an ended session's data is kept
    /// at most when no listener finalizes it (so nothing leaks if none ever runs).
    public var hookSafetyTTL: Duration = .seconds(24 * 3600)
    /// Without ``expiryListener``: how long a session's data outlives its idle timer (it is unreadable
    /// from the moment the timer ends; this only spaces out the writes that extend the data's TTL).
    public var dataGrace: Duration = .seconds(10 * 60)
    /// With ``expiryListener``: the listener warns this long before a session's idle expiry (once
    /// per period of activity), so the application can tell the user.
    public var expiryWarningLead: Duration? = nil
    /// How many sessions' timers this instance remembers, so that touching a recently used session
    /// is one plain `PEXPIRE` instead of a function call (about 300 bytes each: 30 MB for the
    /// default). Past it the oldest entry leaves for each new one; 0 turns the cache off (every
    /// touch calls the function).
    public var touchCacheCapacity = 100_000
    /// Whether lifecycle events (created, resumed, rotated, deleted, expired) are published on
    /// `<namespace>:events` as JSON, for `session-cache watch` and other observers. Events name a
    /// session by a 9-character prefix of its id, never the whole id.
    public var publishEvents = true
    /// How long after its first use the former id of an imported session still gives the same
    /// session (``SessionStore/redeemImported(_:)``): tabs restored together present it at once,
    /// and a response lost on the way is tried again. Later uses give nothing.
    public var importedSessionGrace: Duration = .seconds(10)

    /// How many replicas must have a write before the store acknowledges it.
    public struct ReplicaAcknowledgement: Sendable, Hashable {
        /// Which writes wait.
        public enum Scope: Sendable, Hashable {
            /// `create`, `rotate`, `delete` and lock acquisition.
            case lifecycle
            /// Those, and every write of data: messages and metadata (touches do not wait).
            case everyWrite
        }

        /// Replicas that must confirm (`WAIT replicas timeout`).
        public var replicas: Int
        /// How long to wait for them.
        public var timeout: Duration
        /// Which writes wait.
        public var scope: Scope

        public init(replicas: Int, timeout: Duration = .seconds(1), scope: Scope = .lifecycle) {
            self.replicas = replicas
            self.timeout = timeout
            self.scope = scope
        }
    }

    /// The acknowledgement data writes wait for (messages, metadata): only with scope `everyWrite`.
    var dataWriteAcknowledgement: ReplicaAcknowledgement? {
        replicaAcknowledgement?.scope == .everyWrite ? replicaAcknowledgement : nil
    }

    /// Durability against a failover: when set, `create`, `rotate`, `delete` and lock acquisition
    /// (and with scope ``ReplicaAcknowledgement/Scope/everyWrite`` messages and metadata too)
    /// return only after this many replicas have the write, and throw
    /// ``SessionError/notReplicated(acknowledged:required:)`` (``LockError/notReplicated`` for
    /// locks) when they do not within the timeout.
    ///
    /// What it protects: a write acknowledged to the caller is on `replicas` replicas, so a failover
    /// to one of them (Sentinel, Redis Cluster) keeps it. What it does not: the write is applied on
    /// the primary even when the wait fails (the error says so; the caller may retry or give up);
    /// a failover may still promote a replica that did not confirm (Redis picks the most up to date
    /// one, which had it if any had); touches are never waited for (nor, with scope `lifecycle`,
    /// messages and metadata);
    /// and it is not a disk sync (`appendfsync` decides that). nil (the default): Redis's
    /// asynchronous replication.
    public var replicaAcknowledgement: ReplicaAcknowledgement? = nil
    /// Sizes past which writes are refused.
    public var limits = Limits()
    /// Debug-level log of every operation (never the full session id).
    /// Defaults to the `LoggingSystem` the application bootstrapped.
    public var logger = Logger(label: "session-store")
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

    /// Throws ``SessionError/invalidConfiguration(_:)`` for settings that cannot work.
    public func validate() throws(SessionError) {
        _ = try SessionKeyspace(namespace: namespace, bucketCount: bucketCount)
        if touchCacheCapacity < 0 { throw .invalidConfiguration("touchCacheCapacity must not be negative") }
        if importedSessionGrace < .zero || importedSessionGrace > .seconds(3600) {
            throw .invalidConfiguration("importedSessionGrace must lie between 0 and 1 hour")
        }
        if customIdleTimeouts.lowerBound <= .zero || customIdleTimeouts.upperBound > Self.maximumLifetime {
            throw .invalidConfiguration("customIdleTimeouts must lie between 0 and \(Self.maximumLifetime)")
        }
        let lifetimes = [absoluteLifetimes.aggressive, absoluteLifetimes.standard, absoluteLifetimes.lenient, absoluteLifetimes.persistent]
        for lifetime in lifetimes + [absoluteLifetimes.custom].compactMap({ $0 }) where lifetime > Self.maximumLifetime {
            throw .invalidConfiguration("an absolute lifetime of \(lifetime) is longer than \(Self.maximumLifetime)")
        }
        if case .custom(let idle) = defaultMode, !customIdleTimeouts.contains(idle) {
            throw .invalidConfiguration("the default mode's idle timeout \(idle) is outside customIdleTimeouts")
        }
        for mode in [TimeoutMode.aggressive, .standard, .lenient, .persistent, defaultMode] {
            let lifetime = absoluteLifetimes.lifetime(for: mode)
            if lifetime < mode.idleTimeout {
                throw .invalidConfiguration("the absolute lifetime of \(mode.storedName) (\(lifetime)) is shorter than its idle timeout")
            }
        }
        if messageWindow < 1 { throw .invalidConfiguration("messageWindow must be at least 1") }
        if hookSafetyTTL <= .zero || dataGrace <= .zero { throw .invalidConfiguration("hookSafetyTTL and dataGrace must be positive") }
        if let lead = expiryWarningLead, lead <= .zero { throw .invalidConfiguration("expiryWarningLead must be positive") }
        if limits.maxSessionBytes < 1 || limits.maxMetadataKeys < 0 || limits.maxMessagesPerCall < 1 || limits.maxListScan < 1
            || (limits.maxSessionsPerUser ?? 1) < 1
        {
            throw .invalidConfiguration("limits must be positive")
        }
    }

    /// How the data outlives its timer, as the functions take it.
    var retention: DataRetention {
        DataRetention(
            listener: expiryListener, graceMilliseconds: (expiryListener ? hookSafetyTTL : dataGrace).wholeMilliseconds,
            indexLifetimeMilliseconds: indexLifetime.wholeMilliseconds,
            warningLeadMilliseconds: expiryListener ? expiryWarningLead?.wholeMilliseconds ?? 0 : 0)
    }

    /// How long a bucket's index keys live past their last write: longer than any session in them.
    var indexLifetime: Duration { absoluteLifetimes.longest + hookSafetyTTL + dataGrace }
}
