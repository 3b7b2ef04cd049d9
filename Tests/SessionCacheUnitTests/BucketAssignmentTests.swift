import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

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
