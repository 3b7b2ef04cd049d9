import Testing

@testable import SessionCache

@Suite("Notification gate")
struct NotificationGateTests {
    @Test func pausesWhenEveryBucketIsDueAtEveryTickAndResumesBelowHalfOfThat() {
        var gate = NotificationGate()
        // 85 buckets, 10 sweep intervals per measurement.
        #expect(gate.measured(claims: 850, buckets: 85, sweepIntervals: 10) == .none, "at the bound: still useful")
        #expect(gate.measured(claims: 851, buckets: 85, sweepIntervals: 10) == .unsubscribe)
        #expect(!gate.subscribed)
        #expect(gate.measured(claims: 900, buckets: 85, sweepIntervals: 10) == .none, "paused once")
        #expect(gate.measured(claims: 500, buckets: 85, sweepIntervals: 10) == .none, "between half and the bound: stays paused")
        #expect(gate.measured(claims: 424, buckets: 85, sweepIntervals: 10) == .subscribe)
        #expect(gate.subscribed)
        #expect(gate.measured(claims: 0, buckets: 85, sweepIntervals: 10) == .none, "resumed once")
    }

    @Test func aListenerThatOwnsNoBucketYetCountsAsOwningOne() {
        var gate = NotificationGate()
        #expect(gate.measured(claims: 5, buckets: 0, sweepIntervals: 10) == .none)
        #expect(gate.measured(claims: 11, buckets: 0, sweepIntervals: 10) == .unsubscribe)
        #expect(gate.measured(claims: 1, buckets: 0, sweepIntervals: 0) == .none, "no interval: no decision")
    }
}
