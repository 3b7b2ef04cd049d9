extension Duration {
    /// This delay made uneven: a random duration between half of it and all of it ("equal
    /// jitter"). Every wait before trying Redis again goes through here, so that app servers that
    /// lost Redis together (a failover, a restart) do not come back in lockstep and hit the new
    /// server, or the nodes of a cluster, all in the same millisecond.
    var jittered: Duration {
        guard self > .zero else { return self }
        let half = self / 2
        return half + .nanoseconds(Int64.random(in: 0...max(0, (self - half).nanoseconds)))
    }

    /// Whole nanoseconds (saturating: delays are far below the 292 years that fit).
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}

/// The pauses between tries of a call that Redis refused for a passing reason (`TRYAGAIN`,
/// `LOADING`, a slot still migrating): 10 ms, doubling to 500 ms, at most half the time left so
/// that the last try comes close to the deadline, jittered. Nil when too little time is left to
/// try again.
struct RetryBackoff {
    private var delay = Duration.milliseconds(10)

    /// The pause before the next try, given the time `left` until the deadline.
    mutating func next(left: Duration) -> Duration? {
        guard left >= .milliseconds(20) else { return nil }
        defer { delay = min(delay * 2, .milliseconds(500)) }
        return min(delay, left / 2).jittered
    }
}
