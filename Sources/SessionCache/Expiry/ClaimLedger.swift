/// Every claim an ``ExpiryListener`` holds, from the visit that claimed it to its finalize: a plain
/// state machine (event in, action out) that the listener carries out. It knows no Redis and no
/// clock of its own; the listener passes the time where it matters.
///
/// A claim goes through these phases:
///
/// ```
/// claimed ── data read ──► hook running ──► awaiting finalize ──► finalizing ──► finished
///    │ read failed            │ lost                │ lost              │ failed: awaiting finalize
///    ▼                        ▼                     ▼                   │ ok/lost: finished
///  (dropped, bucket retried) finished            finished
/// ```
///
/// "Finished" sessions are remembered for two leases: a visit that asks for this listener's own
/// claims (after a lost reply) may read a claim just before its finalize and answer after it, and
/// such a session must not start again.
struct ClaimLedger<Cancellation> {
    enum Phase: Equatable {
        /// Claimed; its data is being read, or its hook runs.
        case running
        /// Its hook has ended; the finalize item waits for the next batch.
        case awaitingFinalize
        /// A finalize call carrying it has been sent: a renewal that finds the claim gone raced
        /// that call (which reports a claim lost to another listener itself).
        case finalizing
    }

    struct Claim {
        let bucket: Int
        /// Cancels the hook when the claim is lost.
        let cancellation: Cancellation
        var phase: Phase = .running
        var item: FinalizeFunction.Item?
    }

    /// What to do when a renewal finds a claim no longer this listener's.
    enum LostAction {
        /// The hook still runs: cancel it (another listener runs it again).
        case cancelHook(Cancellation)
        /// The hook had ended but its session was not finalized yet: the finalize is given up
        /// (another listener runs the hook again). Nothing to cancel.
        case gaveUpFinalize
        /// Finalized, being finalized, or unknown: nothing to do.
        case none
    }

    private(set) var claims: [String: Claim] = [:]
    private var finished: [String: ContinuousClock.Instant] = [:]
    private var lastPrune: ContinuousClock.Instant?
    /// How long a finished session is remembered: a stale reply is at most a lease old.
    let lease: Duration

    init(lease: Duration) {
        self.lease = lease
    }

    /// Whether `id` is claimed or was finished lately (a notification or a stale visit for it
    /// brings nothing new).
    func isKnown(_ id: String) -> Bool {
        claims[id] != nil || finished[id] != nil
    }

    /// A visit claimed `id`. Returns whether its hook should start (false: it is already running
    /// here or was finished lately).
    mutating func claimed(_ id: String, bucket: Int, cancellation: Cancellation) -> Bool {
        if isKnown(id) { return false }
        claims[id] = Claim(bucket: bucket, cancellation: cancellation)
        return true
    }

    /// The cancellation of a running claim, or nil when it is no longer running here.
    func cancellation(of id: String) -> Cancellation? {
        guard let claim = claims[id], claim.phase == .running else { return nil }
        return claim.cancellation
    }

    /// Reading the claims' data failed. Returns the buckets to visit again (asking for this
    /// listener's own claims, which stay in Redis).
    mutating func readFailed(_ ids: [String]) -> [Int] {
        ids.compactMap { claims.removeValue(forKey: $0)?.bucket }
    }

    /// The hook of `id` ended (or there was none to run): queue its finalize. Returns false when
    /// the claim is not running here any more (lost meanwhile).
    mutating func hookEnded(_ id: String, finalize item: FinalizeFunction.Item) -> Bool {
        guard claims[id]?.phase == .running else { return false }
        claims[id]?.phase = .awaitingFinalize
        claims[id]?.item = item
        return true
    }

    /// The hook of `id` stopped because its claim was lost.
    mutating func hookLost(_ id: String, at now: ContinuousClock.Instant) {
        finish(id, at: now)
    }

    /// The finalize items to send now, grouped by bucket; they become `finalizing`.
    mutating func takeFinalizeBatch() -> [(bucket: Int, items: [FinalizeFunction.Item])] {
        var byBucket: [Int: [FinalizeFunction.Item]] = [:]
        for (id, claim) in claims where claim.phase == .awaitingFinalize {
            guard let item = claim.item else { continue }
            byBucket[claim.bucket, default: []].append(item)
            claims[id]?.phase = .finalizing
        }
        return byBucket.map { (bucket: $0.key, items: $0.value) }.sorted { $0.bucket < $1.bucket }
    }

    /// Whether finalize items wait to be sent.
    var hasPendingFinalize: Bool {
        claims.values.contains { $0.phase == .awaitingFinalize }
    }

    /// A finalize call answered for `ids` (finalized, or found lost to another listener: either
    /// way this listener is done with them).
    mutating func finalized(_ ids: [String], at now: ContinuousClock.Instant) {
        for id in ids { finish(id, at: now) }
    }

    /// A finalize call failed: its items wait for the next batch (their claims are renewed
    /// meanwhile).
    mutating func finalizeFailed(_ ids: [String]) {
        for id in ids where claims[id]?.phase == .finalizing { claims[id]?.phase = .awaitingFinalize }
    }

    /// The claims to renew, grouped by bucket.
    func renewals() -> [(bucket: Int, ids: [String])] {
        Dictionary(grouping: claims, by: { $0.value.bucket })
            .map { (bucket: $0.key, ids: $0.value.map(\.key).sorted()) }
            .sorted { $0.bucket < $1.bucket }
    }

    /// A renewal found `id`'s claim no longer this listener's.
    mutating func renewalLost(_ id: String, at now: ContinuousClock.Instant) -> LostAction {
        guard let claim = claims[id] else { return .none }
        switch claim.phase {
        case .running:
            // The hook's task ends it (hookLost) when it sees the cancellation.
            return .cancelHook(claim.cancellation)
        case .awaitingFinalize:
            finish(id, at: now)
            return .gaveUpFinalize
        case .finalizing:
            return .none
        }
    }

    private mutating func finish(_ id: String, at now: ContinuousClock.Instant) {
        claims[id] = nil
        finished[id] = now
        // Forget what is older than two leases, at most once per lease.
        if let last = lastPrune, now - last <= lease { return }
        finished = finished.filter { now - $0.value < lease * 2 }
        lastPrune = now
    }
}

extension ClaimLedger: Sendable where Cancellation: Sendable {}
extension ClaimLedger.Claim: Sendable where Cancellation: Sendable {}
