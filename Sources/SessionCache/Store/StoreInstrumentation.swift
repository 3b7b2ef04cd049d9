import CoreMetrics
import HiredisNIO
import Logging
import Tracing

/// Spans, metrics and debug logs around every store operation.
struct StoreInstrumentation: Sendable {
    private struct OperationMetrics: Sendable {
        let count: Counter
        let errors: Counter
        let duration: Timer
    }

    private let metrics: [String: OperationMetrics]
    /// Writes refused because their lease was no longer held: `session.lock.stale_writes`.
    let staleWrites: Counter
    private let tracer: any Tracer
    /// Spans, clock reads and timers cost per operation: skipped when nobody records them.
    private let isTracing: Bool
    private let isMeasuring: Bool
    private let logger: Logger
    private let namespace: String

    static let operations = [
        "create", "resume", "touch", "heartbeat", "append_messages", "recent_messages", "clear_messages", "get", "set_metadata",
        "list", "delete", "delete_all", "rotate", "bind", "stats",
    ]

    init(configuration: SessionStoreConfiguration) {
        var metrics: [String: OperationMetrics] = [:]
        for operation in Self.operations {
            let dimensions = [("operation", operation)]
            metrics[operation] = OperationMetrics(
                count: Counter(label: "session.operations", dimensions: dimensions, factory: configuration.metricsFactory),
                errors: Counter(label: "session.errors", dimensions: dimensions, factory: configuration.metricsFactory),
                duration: Timer(label: "session.operation.duration", dimensions: dimensions, factory: configuration.metricsFactory))
        }
        self.metrics = metrics
        self.staleWrites = Counter(label: "session.lock.stale_writes", factory: configuration.metricsFactory)
        self.tracer = configuration.tracer
        self.isTracing = !(configuration.tracer is NoOpTracer)
        self.isMeasuring = !(configuration.metricsFactory is NOOPMetricsHandler)
        self.logger = configuration.logger
        self.namespace = configuration.namespace
    }

    /// Runs `body` as the operation `name`: a client span (`db.system.name` = redis,
    /// `db.operation.name`), a count, a duration, an error count, and a debug log line. Errors from
    /// Redis come out as ``SessionError/redis(_:)``.
    @inline(__always)  // Every async frame around an operation costs an executor check per call.
    func run<T: Sendable>(_ name: String, session id: String? = nil, _ body: () async throws -> T) async throws(SessionError) -> T {
        let start = isMeasuring ? ContinuousClock.now : nil
        let metrics = isMeasuring ? self.metrics[name] : nil
        metrics?.count.increment()
        do {
            let result = isTracing ? try await traced(tracer, name, id: id, body) : try await body()
            if let start { metrics?.duration.recordNanoseconds(Int64((ContinuousClock.now - start).nanoseconds)) }
            logger.debug("session operation", metadata: ["operation": "\(name)", "session": "\(id.map(Self.redacted) ?? "-")"])
            return result
        } catch {
            metrics?.errors.increment()
            let sessionError = Self.sessionError(error)
            logger.debug(
                "session operation failed",
                metadata: ["operation": "\(name)", "session": "\(id.map(Self.redacted) ?? "-")", "error": "\(sessionError)"])
            throw sessionError
        }
    }

    private func traced<Tracer: Tracing.Tracer, T: Sendable>(
        _ tracer: Tracer, _ name: String, id: String?, _ body: () async throws -> T
    ) async throws -> T {
        try await tracer.withSpan("session.\(name)", ofKind: .client) { span in
            span.attributes["db.system.name"] = "redis"
            span.attributes["db.operation.name"] = name
            span.attributes["db.namespace"] = namespace
            if let id { span.attributes["session.id_prefix"] = Self.redacted(id) }
            return try await body()
        }
    }

    /// The first 9 characters (the bucket and 36 random bits): enough to correlate logs, far too few
    /// to hijack a session.
    static func redacted(_ id: String) -> String { SessionID.redacted(id) }

    static func sessionError(_ error: any Error) -> SessionError {
        switch error {
        case let error as SessionError: return error
        case let error as HiredisError:
            if error.serverCode == "WRONGTYPE" { return .corrupted("a key holds the wrong Redis type (\(error))") }
            if let reply = error.serverError,
                reply.message.contains("unknown command 'FCALL") || reply.message.contains("unknown command 'FUNCTION")
            {
                return .unsupportedServer("the session store needs Redis 7.0 or later (Functions): \(reply.message)")
            }
            return .redis(error)
        default: return .redis(.connectionLost(reason: "\(error)"))
        }
    }
}

extension Duration {
    var nanoseconds: Int {
        let (seconds, attoseconds) = components
        return Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    }
}
