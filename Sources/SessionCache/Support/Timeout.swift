/// Runs `body` until it returns or `duration` passes, whichever comes first.
///
/// Returns the body's result, or nil when the time ran out first (the body is then cancelled and awaited, so it must
/// end promptly on cancellation). One helper for the "wait for an event or a timeout" races of the wake-ups, the
/// limiter and the lock's waiters.
func waiting<Result: Sendable>(
    atMost duration: Duration,
    for body: @escaping @Sendable () async -> Result
) async -> Result? {
    await withTaskGroup(of: Result?.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: duration)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
