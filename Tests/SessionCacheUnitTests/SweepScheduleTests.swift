import Testing

@testable import SessionCache

@Suite("SweepSchedule: when a listener visits its buckets")
struct SweepScheduleTests {
    let start = ContinuousClock.now

    @Test func newBucketsAreVisitedAtOnceThenWhenDueOrStale() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([1, 2, 3])
        #expect(Set(schedule.due(at: start).map(\.bucket)) == [1, 2, 3])
        #expect(schedule.due(at: start).isEmpty, "a bucket being visited is not handed out twice")
        schedule.visited(1, at: start, nextDueIn: .milliseconds(300), full: false)
        schedule.visited(2, at: start, nextDueIn: nil, full: false)
        schedule.visited(3, at: start, nextDueIn: .seconds(10), full: false)
        #expect(schedule.due(at: start + .milliseconds(100)).isEmpty)
        #expect(schedule.due(at: start + .milliseconds(300)).map(\.bucket) == [1])
        schedule.visited(1, at: start + .milliseconds(300), nextDueIn: nil, full: false)
        // Every bucket at least once per full sweep, whatever it said it had due.
        #expect(Set(schedule.due(at: start + .seconds(1)).map(\.bucket)) == [2, 3])
    }

    @Test func aFullVisitComesBackAtOnceAndANotificationWakesItsBucket() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([7, 8])
        _ = schedule.due(at: start)
        schedule.visited(7, at: start, nextDueIn: .seconds(5), full: true)
        schedule.visited(8, at: start, nextDueIn: .seconds(5), full: false)
        #expect(schedule.due(at: start).map(\.bucket) == [7], "it claimed as many as it could: more may be due")
        schedule.visited(7, at: start, nextDueIn: .seconds(5), full: false)
        schedule.notify(8)
        #expect(schedule.nextWake(after: start) == start)
        #expect(schedule.due(at: start).map(\.bucket) == [8])
        schedule.notify(99)  // not ours: ignored
        schedule.visited(8, at: start, nextDueIn: .seconds(5), full: false)
        #expect(schedule.nextWake(after: start) == start + .seconds(1))
    }

    @Test func aFailedVisitRetriesAskingForOwnClaims() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([4])
        #expect(schedule.due(at: start).map(\.recover) == [false])
        schedule.failed(4)
        let again = schedule.due(at: start)
        #expect(again.map(\.bucket) == [4] && again.map(\.recover) == [true])
        schedule.visited(4, at: start, nextDueIn: nil, full: false)
        #expect(schedule.due(at: start + .milliseconds(999)).isEmpty)
    }

    @Test func reassigningDropsOldBucketsAndKeepsKnownOnes() {
        var schedule = SweepSchedule(fullSweepInterval: .seconds(1))
        schedule.assign([1, 2])
        _ = schedule.due(at: start)
        schedule.visited(1, at: start, nextDueIn: .seconds(10), full: false)
        schedule.visited(2, at: start, nextDueIn: .seconds(10), full: false)
        schedule.assign([2, 3])
        #expect(schedule.owned == [2, 3])
        #expect(schedule.due(at: start).map(\.bucket) == [3], "the new bucket at once; the known one keeps its schedule")
    }
}

@Suite("BucketAssignment: rendezvous hashing")
struct BucketAssignmentTests {
    @Test func everyBucketHasExactlyOneOwnerAndTheShareIsEven() {
        let members = (0..<3).map { "listener-\($0)" }
        let shares = members.map { BucketAssignment(me: $0, members: members, bucketCount: 1024).buckets }
        #expect(shares.reduce(0) { $0 + $1.count } == 1024)
        #expect(shares.reduce(Set<Int>()) { $0.union($1) } == Set(0..<1024))
        for share in shares { #expect((250...440).contains(share.count), "uneven share: \(share.count)") }
    }

    @Test func whenAMemberLeavesOnlyItsBucketsMove() {
        let members = (0..<4).map { "l\($0)" }
        let before = members.map { BucketAssignment(me: $0, members: members, bucketCount: 512).buckets }
        let remaining = Array(members.dropLast())
        for (index, member) in remaining.enumerated() {
            let after = BucketAssignment(me: member, members: remaining, bucketCount: 512).buckets
            #expect(after.isSuperset(of: before[index]), "a surviving member keeps its buckets")
        }
        #expect(BucketAssignment(me: "alone", members: [], bucketCount: 64).buckets == Set(0..<64))
    }
}

@Suite("Session ids")
struct SessionIDTests {
    @Test func idsCarryTheirBucketAndAreWellFormed() {
        for bucket in [0, 1, 63, 64, 1023, 16383, SessionKeyspace.maximumBucketCount - 1] {
            let id = SessionID.make(bucket: bucket)
            #expect(id.count == 27)
            #expect(SessionID.bucket(of: id) == bucket)
        }
        let ids = Set((0..<10_000).map { _ in SessionID.make(bucket: 5) })
        #expect(ids.count == 10_000)
        #expect(SessionID.bucket(of: "too short") == nil)
        #expect(SessionID.bucket(of: String(repeating: "{", count: 27)) == nil)
        #expect(SessionID.redacted("ABCDEFGHIJKLMNOPQRSTUVWXYZa") == "ABCDEFGHI")
    }

    @Test func theKeyspaceRefusesIdsOfBucketsItDoesNotHave() throws {
        let keyspace = try SessionKeyspace(namespace: "chat", bucketCount: 64)
        #expect(keyspace.bucket(ofSession: SessionID.make(bucket: 63)) == 63)
        #expect(keyspace.bucket(ofSession: SessionID.make(bucket: 64)) == nil)
        #expect(keyspace.session(SessionID.make(bucket: 7)).hasPrefix("chat:{7}:session:"))
        #expect(throws: SessionError.self) { try SessionKeyspace(namespace: "has{brace", bucketCount: 64) }
        #expect(throws: SessionError.self) { try SessionKeyspace(namespace: "ok", bucketCount: 0) }
        let id = SessionID.make(bucket: 9)
        let parsed = keyspace.parseTimer(Substring(keyspace.timer(id, idleMilliseconds: 1000, deadline: 1_800_000_000_000)))
        #expect(parsed?.bucket == 9 && parsed?.id == id)
        #expect(keyspace.parseTimer("other:{9}:session:\(id):timer:1:2") == nil)
    }
}

@Suite("TimerNames: when a touch may be a plain PEXPIRE")
struct TimerNamesTests {
    let keyspace = try! SessionKeyspace(namespace: "t", bucketCount: 16)

    @Test func aPlainPEXPIREIsUsedOnlyFarFromTheDeadline() {
        let names = TimerNames(maximumAge: .seconds(600))
        let id = SessionID.make(bucket: 3)
        let now = 1_800_000_000_000
        let idle = 1_800_000
        let margin = TimerNames.safetyMargin.wholeMilliseconds
        // Further than idle + margin (+ a little elapsed time) from the deadline: fast.
        let far = keyspace.timer(id, idleMilliseconds: idle, deadline: now + idle + margin + 5000)
        names.remember(far, for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id)?.key == far && names.fastTouch(for: id)?.idleMilliseconds == idle)
        // Within it: the function, which caps the timer at the deadline.
        let near = keyspace.timer(id, idleMilliseconds: idle, deadline: now + idle + margin - 1)
        names.remember(near, for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id) == nil)
        names.forget(id)
        #expect(names.fastTouch(for: id) == nil)
        // A name that is not a timer's is not remembered.
        names.remember("t:{3}:session:\(id)", for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id) == nil)
    }

    @Test func entriesAgeOut() async throws {
        let names = TimerNames(maximumAge: .milliseconds(50))
        let id = SessionID.make(bucket: 1)
        let now = 1_800_000_000_000
        names.remember(keyspace.timer(id, idleMilliseconds: 1000, deadline: now + 10_000_000), for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id) != nil)
        try await Task.sleep(for: .milliseconds(80))
        #expect(names.fastTouch(for: id) == nil)
    }
}
