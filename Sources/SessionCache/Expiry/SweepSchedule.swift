/// When an expiry listener visits each of its buckets: a plain state machine (events in, the
/// buckets to visit out), driven by the listener and unit-tested without a server.
///
/// A bucket is visited when its next entry is due (as the last visit reported it), when a
/// keyspace notification names one of its timers, and at least every `fullSweepInterval` anyway
/// (other instances create and delete sessions in it meanwhile). A bucket is never visited twice
/// at once.
struct SweepSchedule {
    typealias Instant = ContinuousClock.Instant

    private struct Bucket {
        var nextDue: Instant?
        var lastVisit: Instant?
        var notified = false
        var visiting = false
        /// The last visit's reply was lost: ask for this listener's own claims again.
        var recover = false
    }

    private var buckets: [Int: Bucket] = [:]
    let fullSweepInterval: Duration

    init(fullSweepInterval: Duration) {
        self.fullSweepInterval = fullSweepInterval
    }

    var owned: Set<Int> { Set(buckets.keys) }

    /// The listener's buckets changed: new ones are visited at once, others are dropped.
    mutating func assign(_ owned: Set<Int>) {
        for bucket in buckets.keys where !owned.contains(bucket) { buckets[bucket] = nil }
        for bucket in owned where buckets[bucket] == nil { buckets[bucket] = Bucket() }
    }

    /// A notification named a timer of `bucket`.
    mutating func notify(_ bucket: Int) {
        buckets[bucket]?.notified = true
    }

    /// The buckets to visit now (marked as being visited), with whether to recover own claims.
    mutating func due(at now: Instant) -> [(bucket: Int, recover: Bool)] {
        var due: [(bucket: Int, recover: Bool)] = []
        for (bucket, state) in buckets where !state.visiting {
            let scheduled = state.nextDue.map { $0 <= now } ?? false
            let stale = state.lastVisit.map { now - $0 >= fullSweepInterval } ?? true
            if scheduled || stale || state.notified || state.recover {
                buckets[bucket]?.visiting = true
                buckets[bucket]?.notified = false
                due.append((bucket, state.recover))
            }
        }
        return due
    }

    /// A visit ended: `nextDueIn` is how long until the bucket's next entry is due (nil: none);
    /// `full` is false when the visit claimed as many as it could take, so more may be due.
    mutating func visited(_ bucket: Int, at now: Instant, nextDueIn: Duration?, full: Bool) {
        guard buckets[bucket] != nil else { return }
        buckets[bucket]?.visiting = false
        buckets[bucket]?.recover = false
        buckets[bucket]?.lastVisit = now
        buckets[bucket]?.nextDue = full ? now : nextDueIn.map { now + max(.zero, $0) }
    }

    /// A visit failed (its reply may have been lost after Redis ran it): visit again, asking for
    /// this listener's own claims.
    mutating func failed(_ bucket: Int) {
        guard buckets[bucket] != nil else { return }
        buckets[bucket]?.visiting = false
        buckets[bucket]?.recover = true
    }

    /// When the next bucket is due, for sleeping until then.
    func nextWake(after now: Instant) -> Instant {
        var wake = now + fullSweepInterval
        for state in buckets.values where !state.visiting {
            if state.notified || state.recover { return now }
            if let due = state.nextDue, due < wake { wake = due }
            if let last = state.lastVisit, last + fullSweepInterval < wake { wake = last + fullSweepInterval }
        }
        return max(now, wake)
    }
}
