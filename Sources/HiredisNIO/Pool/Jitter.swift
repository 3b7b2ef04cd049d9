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
