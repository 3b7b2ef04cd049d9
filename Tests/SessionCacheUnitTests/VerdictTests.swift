import LoadVerdict
import Testing

@Suite("session-load's checker")
struct VerdictTests {
    /// An ended session whose hook ran once with `counter`.
    private func ended(
        _ id: String = "abcdefghijklmnop", ok: Int, indeterminate: Int = 0, counter: Int, runs: [SessionHistory.HookRun]? = nil
    ) -> SessionHistory {
        SessionHistory(
            id: id, ok: ok, indeterminate: indeterminate, alive: false, hasData: false, storedCounter: nil,
            hookRuns: runs ?? [.init(worker: 0, attempt: 0, counter: counter)])
    }

    @Test func aCleanRunPasses() {
        let verdict = Verdict.judge([ended(ok: 5, counter: 5)], killedWorkers: [])
        #expect(verdict.passed)
        #expect(verdict.ended == 1 && verdict.okIncrements == 5 && verdict.messages.isEmpty)
    }

    @Test func fewerThanAcknowledgedIsALostUpdate() {
        let verdict = Verdict.judge([ended(ok: 5, indeterminate: 3, counter: 4)], killedWorkers: [])
        #expect(!verdict.passed)
        #expect(verdict.lostUpdates == 1)
        #expect(verdict.messages.first?.contains("lost update") == true)
    }

    @Test func lostUpdatesWithinWhatAFailoverMayLoseAreReportedNotFailed() {
        let histories = [ended("aaaaaaaaaaaa", ok: 15, counter: 14), ended("bbbbbbbbbbbb", ok: 9, counter: 8)]
        let within = Verdict.judge(histories, killedWorkers: [], asyncReplicationAllowance: 2)
        #expect(within.passed && within.lostUpdates == 0 && within.lostToAsyncReplication == 2)
        #expect(within.messages.isEmpty && within.notes.count == 2)
        // More than the window allows: every one of them is a lost update.
        let beyond = Verdict.judge(histories, killedWorkers: [], asyncReplicationAllowance: 1)
        #expect(!beyond.passed && beyond.lostUpdates == 2 && beyond.lostToAsyncReplication == 0 && beyond.messages.count == 2)
        // Without a failover (no allowance) a lost update fails as always.
        #expect(!Verdict.judge(histories, killedWorkers: [], asyncReplicationAllowance: 0).passed)
        // A session lost whole (no counter anywhere) is never excused.
        let gone = SessionHistory(
            id: "cccccccccccc", ok: 3, indeterminate: 0, alive: false, hasData: false, storedCounter: nil, hookRuns: [])
        #expect(!Verdict.judge([gone], killedWorkers: [], asyncReplicationAllowance: 100).passed)
    }

    @Test func aPhantomWithinTheIndeterminateIsExplained() {
        let verdict = Verdict.judge([ended(ok: 5, indeterminate: 2, counter: 7)], killedWorkers: [])
        #expect(verdict.passed)
        #expect(verdict.explainedPhantoms == 2 && verdict.unexplainedPhantoms == 0)
    }

    @Test func aPhantomBeyondTheIndeterminateFails() {
        let verdict = Verdict.judge([ended(ok: 5, indeterminate: 2, counter: 8)], killedWorkers: [])
        #expect(!verdict.passed)
        #expect(verdict.unexplainedPhantoms == 1)
    }

    @Test func aDuplicateHookIsExplainedOnlyByAKilledFirstWorkerAndARetry() {
        let runs: [SessionHistory.HookRun] = [.init(worker: 1, attempt: 0, counter: 3), .init(worker: 2, attempt: 1, counter: 3)]
        let killed = Verdict.judge([ended(ok: 3, counter: 3, runs: runs)], killedWorkers: [1])
        #expect(killed.passed && killed.hooksDuplicatedExplained == 1)

        let notKilled = Verdict.judge([ended(ok: 3, counter: 3, runs: runs)], killedWorkers: [2])
        #expect(!notKilled.passed && notKilled.hooksDuplicatedUnexplained == 1)

        // A second run that is not a retry (attempt 0) is a real duplicate, killed worker or not.
        let twoFirsts: [SessionHistory.HookRun] = [.init(worker: 1, attempt: 0, counter: 3), .init(worker: 2, attempt: 0, counter: 3)]
        #expect(Verdict.judge([ended(ok: 3, counter: 3, runs: twoFirsts)], killedWorkers: [1]).hooksDuplicatedUnexplained == 1)

        // Three runs are never explained.
        let three = runs + [.init(worker: 0, attempt: 2, counter: 3)]
        #expect(Verdict.judge([ended(ok: 3, counter: 3, runs: three)], killedWorkers: [1, 2]).hooksDuplicatedUnexplained == 1)
    }

    @Test func missedHooksResurrectionsKeysAndHangs() {
        let missed = SessionHistory(id: "m", ok: 0, indeterminate: 0, alive: false, hasData: false, storedCounter: nil, hookRuns: [])
        let aliveAfterHook = SessionHistory(
            id: "a", ok: 1, indeterminate: 0, alive: true, hasData: true, storedCounter: 1,
            hookRuns: [.init(worker: 0, attempt: 0, counter: 1)])
        let dataAfterHook = SessionHistory(
            id: "d", ok: 1, indeterminate: 0, alive: false, hasData: true, storedCounter: 1,
            hookRuns: [.init(worker: 0, attempt: 0, counter: 1)])
        let verdict = Verdict.judge(
            [missed, aliveAfterHook, dataAfterHook], killedWorkers: [], keysWithoutTTL: ["k"], unfinishedAfterDrain: 4)
        #expect(verdict.hooksMissed == 1)
        #expect(verdict.resurrected == 2)
        #expect(verdict.keysWithoutTTL == 1)
        #expect(verdict.hangs == 1)
        #expect(!verdict.passed)
    }

    @Test func theHooksDataDecidesTheFinalCounterOfAnEndedSession() {
        // Redis may still hold a stale counter (it would be a resurrection, judged apart); the
        // hook's data is what the application saw last.
        let history = SessionHistory(
            id: "h", ok: 4, indeterminate: 0, alive: false, hasData: false, storedCounter: 9,
            hookRuns: [.init(worker: 0, attempt: 0, counter: 4)])
        #expect(Verdict.judge([history], killedWorkers: []).passed)
    }
}

@Suite("session-load's fault plan")
struct FaultPlanTests {
    @Test func parsesEveryKindInTimeOrder() throws {
        let plan = try FaultPlan(
            parsing: "kill@25s, pause:5s@12s,worker-kill@18s,blackhole:500ms@30,reshard@40s,failover@35s,partition:4s@45s")
        #expect(
            plan.faults == [
                .init(kind: .pause, at: 12, duration: 5), .init(kind: .workerKill, at: 18), .init(kind: .kill, at: 25),
                .init(kind: .blackhole, at: 30, duration: 0.5), .init(kind: .failover, at: 35), .init(kind: .reshard, at: 40),
                .init(kind: .partition, at: 45, duration: 4),
            ])
        #expect(plan.description == "pause:5s@12s,worker-kill@18s,kill@25s,blackhole:500ms@30s,failover@35s,reshard@40s,partition:4s@45s")
        #expect(try FaultPlan(parsing: plan.description) == plan)
        #expect(try FaultPlan(parsing: "").faults.isEmpty)
    }

    @Test(arguments: [
        "pause@5s", "kill:3s@5s", "reshard:3s@5s", "partition@5s", "freeze:1s@2s", "pause:3s", "pause:-1s@2s", "pause:3s@soon", "kill@",
    ])
    func refusesMalformedItems(_ text: String) {
        #expect(throws: FaultPlan.ParseError.self) { try FaultPlan(parsing: text) }
    }
}
