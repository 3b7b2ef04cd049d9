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
        #expect(SessionID.bucket(of: String(repeating: "é", count: 13) + "A") == nil)  // 27 bytes, not characters
        #expect(SessionID.redacted("ABCDEFGHIJKLMNOPQRSTUVWXYZa") == "ABCDEFGHI")
    }

    /// Ids drawn from many tasks at once, across many refills of the random pool (4 KiB, 18 bytes
    /// per id): all distinct, and every character of the alphabet about equally frequent in their
    /// random part (a pool handed out twice, or bytes wiped before use, would show here).
    @Test func concurrentIdsAreDistinctAndUniform() async {
        let perTask = 2_000
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<20 { group.addTask { (0..<perTask).map { _ in SessionID.make(bucket: 42) } } }
            var all: [String] = []
            for await batch in group { all += batch }
            return all
        }
        #expect(Set(ids).count == 20 * perTask)
        var counts: [UInt8: Int] = [:]
        for id in ids { for byte in id.utf8.dropFirst(SessionID.bucketCharacters) { counts[byte, default: 0] += 1 } }
        let expected = Double(ids.count * 24) / 64
        #expect(counts.count == 64)
        #expect(counts.values.allSatisfy { abs(Double($0) - expected) < expected * 0.05 }, "\(counts.values.sorted())")
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
        // What the expiry listener reads from each notification's channel.
        let channel = "__keyspace@0__:" + keyspace.timer(id, idleMilliseconds: 1000, deadline: 1_800_000_000_000)
        #expect(keyspace.bucket(ofTimerNotification: channel.utf8) == 9)
        #expect(keyspace.session(ofTimerNotification: channel) == id)
        for junk in [
            "__keyspace@0__:chat:{9}:session:", "__keyspace@0__:chat:{9}:session::timer:1:2", "no brace", "chat:{9}:other:x:timer:1:2",
        ] {
            #expect(keyspace.session(ofTimerNotification: junk) == nil, "\(junk)")
        }
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
        #expect(names.fastTouch(for: id) == RESPCommand("PEXPIRE", .string(far), .integer(idle)))
        // Within it: the function, which caps the timer at the deadline.
        let near = keyspace.timer(id, idleMilliseconds: idle, deadline: now + idle + margin - 1)
        names.remember(near, for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id) == nil)
        names.forget(id)
        #expect(names.fastTouch(for: id) == nil)
        // Timings no session has (a name that is not ours) are not remembered, and trap nothing.
        for (badIdle, badDeadline) in [(idle, Int.max), (Int.max, now + idle), (-1, now + idle), (idle, Int.min)] {
            names.remember(
                keyspace.timer(id, idleMilliseconds: badIdle, deadline: badDeadline), for: id, redisTime: now, keyspace: keyspace)
            #expect(names.fastTouch(for: id) == nil)
        }
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

@Suite("JSONValue's parser")
struct JSONParsingTests {
    @Test func itReadsWhatJSONEncoderWritesLikeJSONDecoder() throws {
        let samples: [JSONValue] = [
            .null, true, false, 0, -12.5, 1e21, 3.0e-7, "", "plain", "quote \" backslash \\ slash / tab \t newline \n",
            "ünïcødé and emoji 😀 and \u{1}", ["a", 1, nil, ["nested": [true]]], [:], [], ["k": ["x": "y", "n": 2]],
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for sample in samples {
            let text = String(decoding: try encoder.encode(sample), as: UTF8.self)
            #expect(JSONValue(parsing: text) == sample, "\(text)")
            #expect(JSONValue(parsing: text) == (try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))))
        }
        #expect(JSONValue(parsing: #" { "a" : [ 1 , 2 ] , "b":"\u00e9\ud83d\ude00" } "#) == ["a": [1, 2], "b": "é😀"])
        for invalid in ["", "{", "[1,]", "\"open", "tru", "1 2", "{\"a\" 1}", "\"\\x\"", "01a", "[" + String(repeating: "[", count: 600)] {
            #expect(JSONValue(parsing: invalid) == Optional<JSONValue>.none, "\(invalid)")
        }
    }
}
