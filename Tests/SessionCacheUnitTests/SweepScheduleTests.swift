import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

@Suite("SweepSchedule: when a listener visits its buckets")
struct SweepScheduleTests {
    let start = ContinuousClock.now

    /// Marks the visits of `due` done with the given next due times.
    func visit(_ schedule: inout SweepSchedule, _ due: [SweepSchedule.Visit], at time: ContinuousClock.Instant, next: [Int: Duration?]) {
        for visit in due { schedule.visited(visit, at: time, nextDueIn: next[visit.bucket] ?? nil, saturated: false) }
    }

    @Test func newBucketsAreVisitedAtOnceThenWhenDueOrStale() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([1, 2, 3])
        let first = schedule.due(at: start)
        #expect(Set(first.map(\.bucket)) == [1, 2, 3] && first.allSatisfy(\.full))
        #expect(schedule.due(at: start).isEmpty, "a bucket being visited is not handed out twice")
        visit(&schedule, first, at: start, next: [1: .milliseconds(300), 2: nil, 3: .seconds(10)])
        #expect(schedule.due(at: start + .milliseconds(100)).isEmpty)
        let second = schedule.due(at: start + .milliseconds(300))
        #expect(second == [.init(bucket: 1, recover: false, full: false)])
        visit(&schedule, second, at: start + .milliseconds(300), next: [1: nil])
        // Every bucket at least once per full sweep, whatever it said it had due.
        let third = schedule.due(at: start + .seconds(1))
        #expect(Set(third.map(\.bucket)) == [1, 2, 3] && third.allSatisfy(\.full))
    }

    @Test func aLimitHandsOutTheOldestDueBucketsAndLeavesTheOthersDue() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(10))
        schedule.assign([1, 2, 3, 4])
        let first = schedule.due(at: start)
        // Due 400, 100, 300 and 200 ms from the start.
        visit(
            &schedule, first, at: start, next: [1: .milliseconds(400), 2: .milliseconds(100), 3: .milliseconds(300), 4: .milliseconds(200)])
        let later = start + .seconds(1)
        #expect(schedule.due(at: later, limit: 2).map(\.bucket) == [2, 4], "the two that waited longest")
        #expect(schedule.due(at: later, limit: 5).map(\.bucket) == [3, 1], "the others stayed due, and were not handed out twice")
        #expect(schedule.due(at: later).isEmpty)
    }

    @Test func aSaturatedVisitComesBackAtOnceAndANotificationWakesItsBucket() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([7, 8])
        let first = schedule.due(at: start)
        for visit in first { schedule.visited(visit, at: start, nextDueIn: .seconds(5), saturated: visit.bucket == 7) }
        #expect(schedule.due(at: start).map(\.bucket) == [7], "it claimed as many as it could: more may be due")
        schedule.visited(.init(bucket: 7, recover: false, full: false), at: start, nextDueIn: .seconds(5), saturated: false)
        schedule.notify(8)
        #expect(schedule.nextWake(after: start) == start)
        let notified = schedule.due(at: start)
        #expect(notified == [.init(bucket: 8, recover: false, full: false)])
        schedule.notify(99)  // not ours: ignored
        #expect(schedule.owns(8) && !schedule.owns(99))
        visit(&schedule, notified, at: start, next: [8: .seconds(5)])
        #expect(schedule.nextWake(after: start) == start + .seconds(1))
    }

    @Test func underABacklogTheBucketWithTheOldestEntryLeftIsServedFirst() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(10))
        schedule.assign([1, 2, 3])
        visit(&schedule, schedule.due(at: start), at: start, next: [1: .zero, 2: .zero, 3: .zero])
        // Bucket 1 had entries 900 ms overdue left when its share of the budget ran out; bucket 2
        // only 10 ms overdue ones, visited earlier; bucket 3 was not saturated.
        let later = start + .seconds(1)
        schedule.visited(.init(bucket: 2, recover: false, full: false), at: later, nextDueIn: .milliseconds(-10), saturated: true)
        schedule.visited(
            .init(bucket: 1, recover: false, full: false), at: later + .milliseconds(50), nextDueIn: .milliseconds(-900), saturated: true)
        schedule.visited(.init(bucket: 3, recover: false, full: false), at: later, nextDueIn: .milliseconds(500), saturated: false)
        #expect(schedule.due(at: later + .milliseconds(60)).map(\.bucket) == [1, 2], "the oldest work first, whoever was visited last")
    }

    @Test func aFailedVisitRetriesAskingForOwnClaims() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([4])
        let first = schedule.due(at: start)
        #expect(first.map(\.recover) == [false])
        schedule.failed(first[0])
        let again = schedule.due(at: start)
        #expect(again.map(\.bucket) == [4] && again.map(\.recover) == [true])
        visit(&schedule, again, at: start, next: [:])
        #expect(schedule.due(at: start + .milliseconds(999)).isEmpty)
    }

    @Test func reassigningDropsOldBucketsAndKeepsKnownOnes() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([1, 2])
        visit(&schedule, schedule.due(at: start), at: start, next: [1: .seconds(10), 2: .seconds(10)])
        schedule.assign([2, 3])
        #expect(schedule.owned == [2, 3])
        #expect(schedule.due(at: start).map(\.bucket) == [3], "the new bucket at once; the known one keeps its schedule")
    }
}
