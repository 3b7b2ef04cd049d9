import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

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
