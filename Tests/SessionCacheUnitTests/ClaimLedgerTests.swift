import Testing

@testable import SessionCache

/// Every race of an expiry listener's claims, without a server: the ledger is a plain state
/// machine, so each interleaving is a sequence of events.
@Suite("ClaimLedger: an expiry listener's claims from visit to finalize")
struct ClaimLedgerTests {
    /// Stands in for the hook's cancellation signal: which claim it belongs to.
    typealias Ledger = ClaimLedger<String>
    let start = ContinuousClock.now
    let lease = Duration.seconds(3)

    func item(_ id: String) -> FinalizeFunction.Item {
        FinalizeFunction.Item(id: id, reason: .idleTimeout, user: "u", createdAt: 1)
    }

    @Test func aClaimRunsItsHookOnceThenIsFinalizedInABatchByBucket() {
        var ledger = Ledger(lease: lease)
        let result1 = ledger.claimed("a", bucket: 2, cancellation: "a")
        #expect(result1)
        let result2 = ledger.claimed("b", bucket: 1, cancellation: "b")
        #expect(result2)
        let result3 = ledger.claimed("a", bucket: 2, cancellation: "a2")
        #expect(!result3, "a claim already running here does not start twice")
        #expect(ledger.cancellation(of: "a") == "a")
        let early = ledger.takeFinalizeBatch()
        #expect(early.isEmpty, "nothing is finalized while hooks run")
        let result4 = ledger.hookEnded("a", finalize: item("a"))
        #expect(result4)
        let result5 = ledger.hookEnded("b", finalize: item("b"))
        #expect(result5)
        #expect(ledger.hasPendingFinalize)
        let batch = ledger.takeFinalizeBatch()
        #expect(batch.map(\.bucket) == [1, 2] && batch.map { $0.items.map(\.id) } == [["b"], ["a"]])
        let again = ledger.takeFinalizeBatch()
        #expect(!ledger.hasPendingFinalize && again.isEmpty, "a sent item is not sent again")
        ledger.finalized(["a", "b"], at: start)
        #expect(ledger.claims.isEmpty)
        #expect(ledger.isKnown("a"), "a finished session is remembered")
        let result6 = ledger.claimed("a", bucket: 2, cancellation: "a")
        #expect(!result6, "a stale visit's reply does not start it again")
    }

    @Test func finishedSessionsAreForgottenAfterTwoLeases() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "a")
        ledger.hookLost("a", at: start)
        #expect(ledger.isKnown("a"))
        // The next finish more than a lease later prunes what is older than two leases.
        _ = ledger.claimed("b", bucket: 0, cancellation: "b")
        ledger.hookLost("b", at: start + lease * 2 + .milliseconds(1))
        #expect(!ledger.isKnown("a") && ledger.isKnown("b"))
        let result7 = ledger.claimed("a", bucket: 0, cancellation: "a")
        #expect(result7, "claimed again after it was forgotten")
    }

    @Test func aRenewalLostWhileTheHookRunsCancelsItAndTheHookEndsTheClaim() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "signal-a")
        guard case .cancelHook(let signal) = ledger.renewalLost("a", at: start) else {
            Issue.record("a running hook is cancelled")
            return
        }
        #expect(signal == "signal-a")
        // Until the hook's task sees the cancellation, the claim is still renewed (and found lost).
        #expect(ledger.renewals().flatMap(\.ids) == ["a"])
        ledger.hookLost("a", at: start)
        #expect(ledger.claims.isEmpty && ledger.renewals().isEmpty)
    }

    @Test func aHookThatFinishesDespiteTheCancellationIsStillFinalized() {
        // The cancellation came too late: the hook completed. Its finalize checks the owner and
        // reports the claim lost; either way the ledger ends it.
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "a")
        _ = ledger.renewalLost("a", at: start)
        let result8 = ledger.hookEnded("a", finalize: item("a"))
        #expect(result8)
        let sent = ledger.takeFinalizeBatch()
        #expect(sent.flatMap { $0.items.map(\.id) } == ["a"])
        ledger.finalized(["a"], at: start)
        #expect(ledger.claims.isEmpty)
    }

    /// The defect of the listener before the ledger: a renewal that found the claim lost after the
    /// hook ended, before its finalize was sent, removed the finalize but kept the claim: it was
    /// renewed (and warned about) forever and the session never left this listener.
    @Test func aClaimLostAfterItsHookEndedBeforeItsFinalizeIsEnded() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 4, cancellation: "a")
        _ = ledger.claimed("b", bucket: 4, cancellation: "b")
        let result9 = ledger.hookEnded("a", finalize: item("a"))
        #expect(result9)
        let result10 = ledger.hookEnded("b", finalize: item("b"))
        #expect(result10)
        guard case .gaveUpFinalize = ledger.renewalLost("a", at: start) else {
            Issue.record("the finalize is given up: another listener runs the hook again")
            return
        }
        #expect(ledger.renewals().flatMap(\.ids) == ["b"], "the lost claim is no longer renewed")
        let sent = ledger.takeFinalizeBatch()
        #expect(sent.flatMap { $0.items.map(\.id) } == ["b"], "and no longer finalized")
        #expect(ledger.isKnown("a"), "a stale visit's reply does not start it again here")
        guard case .none = ledger.renewalLost("a", at: start) else {
            Issue.record("a second renewal finds nothing to do")
            return
        }
    }

    @Test func aRenewalRacingTheFinalizeCallChangesNothing() {
        // The finalize was sent; it removed the claim before the renewal read it. The finalize's
        // own reply says whether the claim was lost.
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "a")
        _ = ledger.hookEnded("a", finalize: item("a"))
        _ = ledger.takeFinalizeBatch()
        guard case .none = ledger.renewalLost("a", at: start) else {
            Issue.record("a claim being finalized is not lost")
            return
        }
        #expect(ledger.renewals().flatMap(\.ids) == ["a"], "renewed until its finalize answers")
        ledger.finalized(["a"], at: start)
        #expect(ledger.renewals().isEmpty)
    }

    @Test func aFailedFinalizeIsSentAgainAndCanStillBeLost() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "a")
        _ = ledger.hookEnded("a", finalize: item("a"))
        _ = ledger.takeFinalizeBatch()
        ledger.finalizeFailed(["a"])
        #expect(ledger.hasPendingFinalize)
        guard case .gaveUpFinalize = ledger.renewalLost("a", at: start) else {
            Issue.record("waiting for a retry, the finalize is given up when the claim is lost")
            return
        }
        #expect(!ledger.hasPendingFinalize && ledger.claims.isEmpty)
    }

    @Test func aFailedReadGivesTheBucketsBackAndForgetsTheClaims() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 3, cancellation: "a")
        _ = ledger.claimed("b", bucket: 5, cancellation: "b")
        let retried = ledger.readFailed(["a", "b", "unknown"])
        #expect(retried.sorted() == [3, 5])
        #expect(ledger.claims.isEmpty)
        #expect(!ledger.isKnown("a"), "the next visit's own-claims query starts it again")
        let result11 = ledger.claimed("a", bucket: 3, cancellation: "a")
        #expect(result11)
    }

    @Test func aHookEndingAfterItsClaimWasDroppedQueuesNothing() {
        var ledger = Ledger(lease: lease)
        _ = ledger.claimed("a", bucket: 0, cancellation: "a")
        _ = ledger.readFailed(["a"])
        let result12 = ledger.hookEnded("a", finalize: item("a"))
        #expect(!result12)
        #expect(ledger.cancellation(of: "a") == nil)
        #expect(!ledger.hasPendingFinalize)
    }
}
