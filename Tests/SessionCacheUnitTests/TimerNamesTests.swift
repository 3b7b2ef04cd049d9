import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

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

    /// Past its capacity the cache drops its oldest entries one at a time: the newest stay, and
    /// nothing is cleared at once (a full clear made every next touch slow). Forgetting and
    /// learning the same sessions again does not grow its bookkeeping without bound.
    @Test func pastItsCapacityTheOldestEntriesLeaveOneByOne() {
        let names = TimerNames(maximumAge: .seconds(600), capacity: 1600)
        let now = 1_800_000_000_000
        let ids = (0..<8000).map { _ in SessionID.make(bucket: 2) }
        func learn(_ id: String) {
            names.remember(
                keyspace.timer(id, idleMilliseconds: 1000, deadline: now + 10_000_000), for: id, redisTime: now, keyspace: keyspace)
        }
        for id in ids { learn(id) }
        #expect(names.count <= 1600 && names.count >= 1500, "bounded, and full: \(names.count)")
        // The most recent ones are all still there (an eviction takes the oldest).
        let recent = ids.suffix(400)
        #expect(recent.allSatisfy { names.fastTouch(for: $0) != nil })
        #expect(ids.prefix(400).allSatisfy { names.fastTouch(for: $0) == nil })
        // Churn on a few sessions: forgotten and learnt again, many times.
        for _ in 0..<50 {
            for id in recent {
                names.forget(id)
                learn(id)
            }
        }
        #expect(names.orderCount <= 2 * 1600 + 16, "the insertion order stays bounded: \(names.orderCount)")
        #expect(recent.allSatisfy { names.fastTouch(for: $0) != nil })
    }

    @Test func aCapacityOfZeroTurnsTheCacheOff() {
        let names = TimerNames(maximumAge: .seconds(600), capacity: 0)
        let id = SessionID.make(bucket: 1)
        let now = 1_800_000_000_000
        names.remember(keyspace.timer(id, idleMilliseconds: 1000, deadline: now + 10_000_000), for: id, redisTime: now, keyspace: keyspace)
        #expect(names.fastTouch(for: id) == nil && names.count == 0)
    }
}
