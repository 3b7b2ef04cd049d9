/// When an expiry listener visits each of its buckets: a plain state machine (events in, the
/// buckets to visit out), driven by the listener and unit-tested without a server.
///
/// A bucket is visited when its next entry is due (as the last visit reported it), when a
/// keyspace notification names one of its timers, and at least every `fullSweepInterval` anyway
/// (a full visit: other instances create and delete sessions in it meanwhile, and claims whose
/// lease ran out are taken over then). A bucket is never visited twice at once.
struct SweepSchedule {
    typealias Instant = ContinuousClock.Instant

    private struct Bucket {
        var nextDue: Instant?
        var lastFullVisit: Instant?
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
    var ownedCount: Int { buckets.count }

    /// The listener's buckets changed: new ones are visited at once, others are dropped.
    mutating func assign(_ owned: Set<Int>) {
        for bucket in buckets.keys where !owned.contains(bucket) { buckets[bucket] = nil }
        for bucket in owned where buckets[bucket] == nil { buckets[bucket] = Bucket() }
    }

    /// Whether `bucket` is this listener's.
    func owns(_ bucket: Int) -> Bool { buckets[bucket] != nil }

    /// A notification named a timer of `bucket`.
    mutating func notify(_ bucket: Int) {
        buckets[bucket]?.notified = true
    }

    /// A bucket to visit, and how.
    struct Visit: Equatable {
        let bucket: Int
        /// Also ask for this listener's own claims: an earlier visit's reply was lost.
        let recover: Bool
        /// A full visit (none for `fullSweepInterval`): also take over claims whose lease ran out.
        let full: Bool
    }

    /// The buckets to visit now (marked as being visited), at most `limit` of them, the longest
    /// overdue first: when a visit cannot take everything that is due, the buckets that waited
    /// longest are served first; the others stay due.
    mutating func due(at now: Instant, limit: Int = .max) -> [Visit] {
        var due: [(visit: Visit, since: Instant)] = []
        for (bucket, state) in buckets where !state.visiting {
            let scheduled = state.nextDue.map { $0 <= now } ?? false
            let stale = state.lastFullVisit.map { now - $0 >= fullSweepInterval } ?? true
            if scheduled || stale || state.notified || state.recover {
                let since = min(state.nextDue ?? now, state.lastFullVisit.map { $0 + fullSweepInterval } ?? now)
                due.append((Visit(bucket: bucket, recover: state.recover, full: stale), since))
            }
        }
        due.sort { $0.since < $1.since }
        let chosen = due.prefix(max(0, limit)).map(\.visit)
        for visit in chosen {
            buckets[visit.bucket]?.visiting = true
            buckets[visit.bucket]?.notified = false
        }
        return chosen
    }

    /// A visit ended: `nextDueIn` is how long until the bucket's next entry is due (nil: none;
    /// negative: it is overdue); `saturated` when the visit claimed as many as it could take, so
    /// more may be due at once.
    ///
    /// A saturated bucket keeps the due time of the oldest entry it has left, not the time of the
    /// visit: buckets are served oldest first, and one whose share of a busy sweep's budget ran
    /// out must not go to the back of the line (it did, and under a backlog a few buckets waited
    /// until the backlog was gone: 10 s hook lateness where the median was 100 ms).
    mutating func visited(_ visit: Visit, at now: Instant, nextDueIn: Duration?, saturated: Bool) {
        guard buckets[visit.bucket] != nil else { return }
        buckets[visit.bucket]?.visiting = false
        buckets[visit.bucket]?.recover = false
        if visit.full { buckets[visit.bucket]?.lastFullVisit = now }
        buckets[visit.bucket]?.nextDue =
            saturated ? now + min(.zero, nextDueIn ?? .zero) : nextDueIn.map { now + max(.zero, $0) }
    }

    /// A visit failed (its reply may have been lost after Redis ran it): visit again, asking for
    /// this listener's own claims.
    mutating func failed(_ visit: Visit) {
        guard buckets[visit.bucket] != nil else { return }
        buckets[visit.bucket]?.visiting = false
        buckets[visit.bucket]?.recover = true
    }

    /// When the next bucket is due, for sleeping until then.
    func nextWake(after now: Instant) -> Instant {
        var wake = now + fullSweepInterval
        for state in buckets.values where !state.visiting {
            if state.notified || state.recover { return now }
            if let due = state.nextDue, due < wake { wake = due }
            if let last = state.lastFullVisit, last + fullSweepInterval < wake { wake = last + fullSweepInterval }
        }
        return max(now, wake)
    }
}
