/// What one session went through in a `session-load` run, as the workers recorded it (in a
/// bookkeeping Redis that no fault touches) and as Redis holds it at the end.
public struct SessionHistory: Sendable, Hashable, Codable {
    /// One run of the session's expiry hook.
    public struct HookRun: Sendable, Hashable, Codable {
        /// The worker (app-server instance) that ran it.
        public var worker: Int
        /// The claim's attempt: 0 for the first claim, more after a lost claim.
        public var attempt: Int
        /// The counter in the data the hook received.
        public var counter: Int

        public init(worker: Int, attempt: Int, counter: Int) {
            self.worker = worker
            self.attempt = attempt
            self.counter = counter
        }
    }

    public var id: String
    /// Increments acknowledged to a worker (definitely applied).
    public var ok: Int
    /// Increments whose outcome nobody knows: the write was sent, then the reply was lost (timeout,
    /// connection lost) or the worker died waiting for it.
    public var indeterminate: Int
    /// Whether the store still says the session is alive at the end.
    public var alive: Bool
    /// Whether any of the session's data is left in Redis.
    public var hasData: Bool
    /// The counter Redis holds, when it holds the session.
    public var storedCounter: Int?
    /// Every run of its hook, in the order they began.
    public var hookRuns: [HookRun]

    public init(
        id: String, ok: Int, indeterminate: Int, alive: Bool, hasData: Bool, storedCounter: Int?, hookRuns: [HookRun]
    ) {
        self.id = id
        self.ok = ok
        self.indeterminate = indeterminate
        self.alive = alive
        self.hasData = hasData
        self.storedCounter = storedCounter
        self.hookRuns = hookRuns
    }
}

/// The checker's verdict on a run (Jepsen style: every operation is ok, failed or
/// indeterminate, and the final state must be explained by the ok ones plus some of the
/// indeterminate ones).
///
/// - Counters: `ok ≤ final ≤ ok + indeterminate`. Fewer is a lost update; more is a phantom. The
///   final counter of an ended session is the one its hook received.
/// - Hooks: every ended session's hook ran exactly once, or twice where the first run's worker
///   was killed and the second is a retry (attempt ≥ 1).
/// - Nothing comes back: no session is alive or has data after its hook ran.
/// - Every key has a TTL; the drain ended with nothing left.
public struct Verdict: Sendable, Hashable, Codable {
    public var sessions = 0
    public var ended = 0
    public var okIncrements = 0
    public var indeterminateIncrements = 0
    public var lostUpdates = 0
    /// Phantoms the indeterminate increments explain (applied although their reply was lost).
    public var explainedPhantoms = 0
    public var unexplainedPhantoms = 0
    public var hooksMissed = 0
    /// Second runs of a hook whose first worker was killed.
    public var hooksDuplicatedExplained = 0
    public var hooksDuplicatedUnexplained = 0
    public var resurrected = 0
    public var keysWithoutTTL = 0
    /// 1 when the drain timed out with sessions still unfinished.
    public var hangs = 0
    /// What went wrong, one line per offending session (ids shortened).
    public var messages: [String] = []
    /// Acknowledged increments that a failover without replica acknowledgement lost, within what
    /// asynchronous replication may lose (see `judge`'s `asyncReplicationAllowance`): reported,
    /// not a failure.
    public var lostToAsyncReplication = 0
    /// The sessions behind ``lostToAsyncReplication``, one line each.
    public var notes: [String] = []
    /// What a failover could lose (`judge`'s `asyncReplicationAllowance`).
    public var asyncReplicationAllowance = 0

    public init() {}

    public var passed: Bool {
        lostUpdates == 0 && unexplainedPhantoms == 0 && hooksMissed == 0 && hooksDuplicatedUnexplained == 0 && resurrected == 0
            && keysWithoutTTL == 0 && hangs == 0
    }

    /// Judges the histories. `killedWorkers`: workers the run killed on purpose.
    /// `asyncReplicationAllowance`: how many acknowledged increments a failover may lose (those
    /// acknowledged just before the primary died, when writes did not wait for a replica). Lost
    /// updates of sessions whose counter survived, if they add up to no more than that, are
    /// ``lostToAsyncReplication``; more, and every one of them is a lost update.
    public static func judge(
        _ histories: [SessionHistory], killedWorkers: Set<Int>, keysWithoutTTL: [String] = [], unfinishedAfterDrain: Int = 0,
        asyncReplicationAllowance: Int = 0
    ) -> Verdict {
        var verdict = Verdict()
        verdict.asyncReplicationAllowance = asyncReplicationAllowance
        var counterLosses = 0
        var counterLossMessages: [String] = []
        verdict.sessions = histories.count
        for history in histories.sorted(by: { $0.id < $1.id }) {
            let name = "session \(history.id.prefix(9))…"
            verdict.okIncrements += history.ok
            verdict.indeterminateIncrements += history.indeterminate
            let runs = history.hookRuns
            if !history.alive { verdict.ended += 1 }

            // Hooks.
            if history.alive {
                if !runs.isEmpty {
                    verdict.resurrected += 1
                    verdict.messages.append("\(name) is alive after its hook ran")
                }
            } else if runs.isEmpty {
                verdict.hooksMissed += 1
                verdict.messages.append("\(name) ended but its hook never ran")
            } else {
                if history.hasData {
                    verdict.resurrected += 1
                    verdict.messages.append("\(name) has data after its hook ran")
                }
                if runs.count > 1 {
                    let explained = runs.count == 2 && killedWorkers.contains(runs[0].worker) && runs[1].attempt >= 1
                    if explained {
                        verdict.hooksDuplicatedExplained += 1
                    } else {
                        verdict.hooksDuplicatedUnexplained += 1
                        let who = runs.map { "worker \($0.worker) attempt \($0.attempt)" }.joined(separator: ", ")
                        verdict.messages.append("\(name): hook ran \(runs.count) times (\(who))")
                    }
                }
            }

            // Counters: the hook's data for an ended session, else what Redis holds.
            guard let final = runs.first?.counter ?? history.storedCounter else {
                if history.ok > 0 {
                    verdict.lostUpdates += history.ok
                    verdict.messages.append("\(name): \(history.ok) increments acknowledged, no counter left anywhere")
                }
                continue
            }
            if final < history.ok {
                counterLosses += history.ok - final
                counterLossMessages.append("\(name): \(history.ok) increments acknowledged, counter is \(final) (lost update)")
            } else if final > history.ok + history.indeterminate {
                verdict.unexplainedPhantoms += final - history.ok - history.indeterminate
                verdict.messages.append(
                    "\(name): counter is \(final), only \(history.ok) acknowledged and \(history.indeterminate) indeterminate (phantom)")
            } else {
                verdict.explainedPhantoms += final - history.ok
            }
        }
        if counterLosses > 0, counterLosses <= asyncReplicationAllowance {
            verdict.lostToAsyncReplication = counterLosses
            verdict.notes = counterLossMessages.map { $0 + " by asynchronous replication" }
        } else {
            verdict.lostUpdates += counterLosses
            verdict.messages += counterLossMessages
        }
        verdict.keysWithoutTTL = keysWithoutTTL.count
        if !keysWithoutTTL.isEmpty { verdict.messages.append("keys without a TTL: \(keysWithoutTTL.prefix(5).joined(separator: ", "))") }
        if unfinishedAfterDrain > 0 {
            verdict.hangs = 1
            verdict.messages.append("\(unfinishedAfterDrain) sessions were still unfinished when the drain timed out")
        }
        return verdict
    }
}
