import HiredisNIO
import Testing

/// Runs `body`, expecting a HiredisError, and returns it.
public func expectRedisError(
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> HiredisError? {
    do {
        try await body()
        Issue.record("expected a HiredisError, got success", sourceLocation: sourceLocation)
        return nil
    } catch let error as HiredisError {
        return error
    } catch {
        Issue.record("expected a HiredisError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

extension ContinuousClock.Instant {
    public var elapsed: Duration { ContinuousClock.now - self }
}
