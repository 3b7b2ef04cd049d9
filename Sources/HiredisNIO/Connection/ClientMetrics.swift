import CoreMetrics
import NIOCore

/// The client's metrics, made once from the injected factory.
struct ClientMetrics: Sendable {
    let commands: Counter
    let errors: Counter
    let duration: Timer
    let reconnects: Counter
    let retries: Counter
    let redirections: Counter
    /// Timing costs two clock reads per command: skipped when nobody records.
    let isRecording: Bool

    init(factory: any MetricsFactory) {
        isRecording = !(factory is NOOPMetricsHandler)
        commands = Counter(label: "redis.commands", factory: factory)
        errors = Counter(label: "redis.errors", factory: factory)
        duration = Timer(label: "redis.command.duration", factory: factory)
        reconnects = Counter(label: "redis.reconnects", factory: factory)
        retries = Counter(label: "redis.retries", factory: factory)
        redirections = Counter(label: "redis.redirections", factory: factory)
    }

    /// Runs `body`, counting it and its failure and timing it.
    @inline(__always)
    func measure<T>(_ count: Int = 1, _ body: () async throws -> T) async throws -> T {
        guard isRecording else { return try await body() }
        let start = NIODeadline.now().uptimeNanoseconds
        commands.increment(by: count)
        do {
            let result = try await body()
            duration.recordNanoseconds(Int64(NIODeadline.now().uptimeNanoseconds &- start))
            return result
        } catch {
            errors.increment()
            throw error
        }
    }
}
