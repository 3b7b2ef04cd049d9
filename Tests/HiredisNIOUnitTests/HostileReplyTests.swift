import CHiredis
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOCore
import TestSupport
import Testing

@testable import HiredisNIO

/// Replies a broken or hostile peer sends: whoever can answer as Redis (a proxy, a man in the
/// middle on plaintext, a host a redirect names) must not make the client allocate without
/// bound, crash, or hold a connection forever.
@Suite("Hostile replies")
struct HostileReplyTests {
    /// Feeds `wire` in pieces of `piece` bytes and returns the replies and the error that ended
    /// the read, if any.
    private static func read(
        _ wire: String, limits: ReplyLimits = ReplyLimits(), piece: Int = .max
    ) -> (replies: [RESPReply], error: HiredisError?) {
        let reader = ReplyReader(limits: limits)
        var replies: [RESPReply] = []
        var rest = ByteBuffer(string: wire)
        do {
            while rest.readableBytes > 0 {
                try reader.feed(rest.readSlice(length: min(piece, rest.readableBytes))!)
                while let reply = try reader.next() { replies.append(reply) }
            }
            return (replies, nil)
        } catch {
            return (replies, error)
        }
    }

    /// Thirteen bytes announced two billion elements: the reader filled 16 GiB of slots before one
    /// element arrived (the process was killed). Refused at the header, under the default limits.
    @Test func aHugeArrayHeaderIsRefusedBeforeAnythingIsAllocated() {
        for header in ["*2147483647\r\n", "*1048577\r\n", "*2\r\n*1048576\r\n"] {
            let (replies, error) = Self.read(":1\r\n" + header)
            #expect(replies == [.integer(1)], "the reply before it is delivered")
            #expect(error?.code == .replyTooLarge, "\(header): \(String(describing: error))")
        }
        // Past 32 bits hiredis 0.14 refuses the length itself.
        let error = Self.read("*4294967295\r\n").error
        #expect(error?.code == .replyTooLarge || error?.code == .protocolError, "\(String(describing: error))")
        // Exactly at the limit is fine.
        let limits = ReplyLimits(maxElements: 3)
        #expect(Self.read("*3\r\n:1\r\n:2\r\n:3\r\n", limits: limits).replies == [.array([.integer(1), .integer(2), .integer(3)])])
    }

    /// Nested arrays cannot multiply the element limit: it counts every level of one reply.
    @Test func elementsAreCountedOverEveryLevelOfAReply() {
        let limits = ReplyLimits(maxElements: 10)
        let inner = "*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n"
        #expect(Self.read("*2\r\n" + inner + inner, limits: limits).error == nil)
        #expect(Self.read("*3\r\n" + inner + inner + inner, limits: limits).error?.code == .replyTooLarge)
        // The next reply starts its own count.
        let (replies, error) = Self.read("*2\r\n" + inner + inner + "*2\r\n" + inner + inner, limits: limits)
        #expect(replies.count == 2 && error == nil)
    }

    @Test func aBulkStringTooLargeIsRefusedFromItsHeaderBeforeItsBytesArrive() {
        // hiredis keeps a bulk string's header until the whole string is buffered: without the
        // check, `$<huge>` and a stream of bytes grew the buffer forever.
        let (_, error) = Self.read("$67108865\r\nabc")
        #expect(error?.code == .replyTooLarge, "\(String(describing: error))")
        // Lengths past 64 bits: hiredis 1.x refuses them itself, 0.14 wraps them (a nil, then
        // garbage): an error either way, never a trap.
        for header in ["$9223372036854775807\r\n", "$99999999999999999999999\r\n"] {
            let error = Self.read(header + "abc").error
            #expect(error?.code == .replyTooLarge || error?.code == .protocolError, "\(header): \(String(describing: error))")
        }
        let limits = ReplyLimits(maxBulkBytes: 10, maxReplyBytes: 100)
        #expect(Self.read("$10\r\n0123456789\r\n", limits: limits).replies == [.bulkString(ByteBuffer(string: "0123456789"))])
        #expect(Self.read("$11\r\n01234567890\r\n", limits: limits).error?.code == .replyTooLarge)
        // Status and error lines are strings too.
        #expect(Self.read("+" + String(repeating: "x", count: 11) + "\r\n", limits: limits).error?.code == .replyTooLarge)
    }

    @Test func aReplyThatNeverEndsIsRefusedOnceItPassesTheReplyLimit() {
        let limits = ReplyLimits(maxBulkBytes: 1000, maxReplyBytes: 1000)
        // A status line without its CRLF, and a bulk string's header without its CRLF, streamed.
        for start in ["+", "$", "*1\r\n$", "-ERR "] {
            let endless = start + String(repeating: "7", count: 1500)
            let (_, error) = Self.read(endless, limits: limits, piece: 100)
            #expect(error?.code == .replyTooLarge, "\(start): \(String(describing: error))")
        }
        // Many strings within the bulk limit, together past the reply limit.
        let strings = (0..<20).map { _ in "$90\r\n" + String(repeating: "s", count: 90) + "\r\n" }.joined()
        #expect(Self.read("*20\r\n" + strings, limits: limits, piece: 64).error?.code == .replyTooLarge)
        #expect(Self.read("*10\r\n" + strings.prefix(10 * 97), limits: limits, piece: 64).error == nil)
    }

    /// hiredis scans a line again at every read until its CRLF arrives: a line that never ends
    /// cost time quadratic in its length (up to the 256 MiB reply limit). Lines stop at 64 KiB.
    @Test func aLineThatNeverEndsIsRefusedAt64KiB() {
        for start in ["+", "-ERR ", ":", "*", "$"] {
            let (_, error) = Self.read(start + String(repeating: "1", count: 70_000), piece: 4096)
            #expect(error?.code == .replyTooLarge, "\(start): \(String(describing: error))")
        }
        // A bulk string's bytes are no line: 100 KB of them in one reply are fine.
        let big = String(repeating: "b", count: 100_000)
        #expect(Self.read("$100000\r\n" + big + "\r\n", piece: 4096).replies == [.bulkString(ByteBuffer(string: big))])
    }

    @Test func nestingDeeperThanTheLimitIsRefused() {
        let limits = ReplyLimits(maxNesting: 3)
        #expect(Self.read("*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits).replies == [.array([.array([.array([.integer(1)])])])])
        #expect(Self.read("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits).error?.code == .replyTooLarge)
        // Under the default limit, a deep reply is an error (hiredis 0.14 stops at 7 by itself),
        // never a crash.
        let deep = String(repeating: "*1\r\n", count: 100_000) + ":1\r\n"
        let error = Self.read(deep).error
        #expect(error?.code == .replyTooLarge || error?.code == .protocolError, "\(String(describing: error))")
    }

    /// hiredis 1.x parses RESP3 whatever the protocol; we speak RESP2, so each is refused as a
    /// protocol error (hiredis 0.14 refuses their type bytes itself). Before, a double or boolean
    /// became a made-up node index under hiredis 1.x.
    @Test func resp3RepliesAreProtocolErrorsOnBothHiredisVersions() {
        let resp3 = [
            ",3.14\r\n", "#t\r\n", "_\r\n", "%1\r\n:1\r\n:2\r\n", "~1\r\n:1\r\n", ">2\r\n+a\r\n+b\r\n", "=7\r\ntxt:abc\r\n",
            "(12345678901234567890\r\n", "|1\r\n+a\r\n+b\r\n:1\r\n", "*2\r\n:1\r\n,2.5\r\n",
        ]
        for wire in resp3 {
            let (replies, error) = Self.read(":7\r\n" + wire + ":8\r\n")
            #expect(replies == [.integer(7)], "\(wire.debugDescription)")
            #expect(error?.code == .protocolError, "\(wire.debugDescription): \(String(describing: error))")
        }
    }

    @Test func malformedLengthsAreErrorsNotTraps() {
        for wire in ["*-5\r\n", "$-5\r\n", "*-1\r\n", "$-1\r\n", "*abc\r\n", "$1x\r\nab\r\n", ":12a\r\n", "*9223372036854775807\r\n"] {
            let (replies, error) = Self.read(wire)
            // `*-1`/`$-1` are RESP2's nil; the rest fail without crashing.
            if wire == "*-1\r\n" || wire == "$-1\r\n" {
                #expect(replies == [.null] && error == nil)
            } else {
                #expect(error != nil, "\(wire.debugDescription)")
            }
        }
    }

    @Test func limitsOfZeroAreRefusedByTheConfiguration() async throws {
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: 1)
        configuration.replyLimits.maxElements = 0
        let error = await expectRedisError { _ = try await HiredisConnection.connect(configuration: configuration) }
        #expect(error?.code == .invalidConfiguration)
    }

    /// scripts/test runs this suite against Debian's hiredis 0.14 and again against a hiredis 1.x
    /// it builds (EXPECT_HIREDIS_MAJOR=1): the run says which one it really linked.
    @Test func theHiredisVersionIsTheOneExpected() throws {
        let version = Int(chiredis_version())
        print("hiredis \(version / 1_000_000).\(version / 1000 % 1000).\(version % 1000)")
        if let expected = ProcessInfo.processInfo.environment["EXPECT_HIREDIS_MAJOR"].flatMap(Int.init) {
            #expect(version / 1_000_000 == expected)
        }
        #expect(version >= 14_000)
    }

    /// End to end: a peer answering a GET with a 13-byte header. The command fails with a typed
    /// error, the connection is dropped, and the next command gets a new connection.
    @Test func aServerAnnouncingTwoBillionElementsGetsItsConnectionDropped() async throws {
        let fake = try await FakeServer { connection, chunk in
            chunk == 1 ? "+OK\r\n" : connection == 1 ? "*2147483647\r\n" : "$2\r\nok\r\n"
        }
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: fake.port)
        configuration.poolSize = 1
        let client = try HiredisClient.started(configuration: configuration)
        let error = await expectRedisError { _ = try await client.send(RESPCommand("GET", "k")) }
        #expect(error?.code == .replyTooLarge)
        #expect(try await client.send(RESPCommand("GET", "k")).string == "ok")
        await client.close()
        await fake.close()
    }

    /// A server that trickles a reply one byte now and then kept the connection from being
    /// presumed dead (bytes arrive), and every later command on it timed out behind that reply.
    /// The overdue reply now closes the connection; the next command goes to a new one.
    @Test func aTrickledReplyPastItsDeadlineClosesTheConnection() async throws {
        let fake = try await FakeServer(trickleEvery: .milliseconds(20)) { connection, chunk in
            guard chunk > 1 else { return "+OK\r\n" }
            return connection == 1 ? "$100000\r\n" + String(repeating: "x", count: 100_000) + "\r\n" : "$2\r\nok\r\n"
        }
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: fake.port)
        configuration.poolSize = 1
        configuration.commandTimeout = .milliseconds(400)
        let client = try HiredisClient.started(configuration: configuration)
        let first = await expectRedisError { _ = try await client.send(RESPCommand("GET", "slow")) }
        #expect(first?.code == .timedOut && first?.commandMayHaveRun == true)
        // On the old rule this waited behind the trickle and timed out too.
        let reply = try await client.send(RESPCommand("GET", "next"), timeout: .seconds(3))
        #expect(reply.string == "ok")
        await client.close()
        await fake.close()
    }
}
