import EmbeddedRedis
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import HiredisNIO

@Suite("Commands against a real redis-server")
struct CommandTests {
    @Test func repliesOfEveryType() async throws {
        try await withRedis { _, client in
            #expect(try await client.send(RESPCommand("PING")) == .simpleString("PONG"))
            #expect(try await client.send(RESPCommand("INCRBY", "n", 41)) == .integer(41))
            #expect(try await client.send(RESPCommand("GET", "missing")) == .null)
            try await client.set("s", to: "text")
            #expect(try await client.get("s").map { String(buffer: $0) } == "text")
            let nested = try await client.send(
                RESPCommand("EVAL", "return {1, 'two', {3, {'four'}}, redis.status_reply('OK'), redis.error_reply('INNER bad')}", 0))
            #expect(
                nested
                    == .array([
                        .integer(1), .bulkString(ByteBuffer(string: "two")),
                        .array([.integer(3), .array([.bulkString(ByteBuffer(string: "four"))])]),
                        .simpleString("OK"), .error("INNER bad"),
                    ]))
        }
    }

    @Test func binaryValuesRoundTrip() async throws {
        try await withRedis { _, client in
            let binary: [UInt8] = [0, 1, 2, 0, 255, 13, 10, 0x24, 0x2A, 0]
            let key: [UInt8] = [107, 0, 121]  // "k\0y"
            _ = try await client.send(RESPCommand("SET", .bytes(key), .bytes(binary)))
            #expect(try await client.send(RESPCommand("GET", .bytes(key))).bytes == binary)
            #expect(try await client.send(RESPCommand("STRLEN", .bytes(key))) == .integer(binary.count))

            // 4 MiB of every byte value.
            let large = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 13)) }
            try await client.set("large", to: .bytes(large))
            let back = try await client.get("large")
            #expect(back?.readableBytes == large.count)
            #expect(back.map { Array($0.readableBytesView) } == large)
        }
    }

    @Test func scanKeysWalksTheWholeKeyspace() async throws {
        try await withRedis { _, client in
            let keys = (0..<2500).map { "scan:\($0)" }
            for start in stride(from: 0, to: keys.count, by: 500) {
                _ = try await client.pipeline(keys[start..<start + 500].map { RESPCommand("SET", .string($0), "1") })
            }
            try await client.set("other", to: "1")
            // Many SCAN steps (a small count), one pattern, and every key when none is given.
            #expect(try await client.scanKeys(matching: "scan:*", count: 100).sorted() == keys.sorted())
            #expect(try await client.scanKeys().count == keys.count + 1)
            #expect(try await client.scanKeys(matching: "nothing:*").isEmpty)
        }
    }

    @Test func errorRepliesAreTypedWithTheirCode() async throws {
        try await withRedis { _, client in
            _ = try await client.send(RESPCommand("LPUSH", "list", "x"))
            let wrongType = await expectRedisError { _ = try await client.get("list") }
            #expect(wrongType?.serverCode == "WRONGTYPE")
            let unknown = await expectRedisError { _ = try await client.send(RESPCommand("NOSUCHCOMMAND")) }
            #expect(unknown?.serverCode == "ERR")
            // The connection is still in step after errors.
            #expect(try await client.send(RESPCommand("ECHO", "after")).string == "after")
        }
    }

    @Test func pipelinesAndTransactions() async throws {
        try await withRedis { _, client in
            let replies = try await client.pipeline([
                RESPCommand("SET", "a", "1"), RESPCommand("INCR", "a"), RESPCommand("LPUSH", "a", "x"), RESPCommand("GET", "a"),
            ])
            #expect(replies.count == 4)
            #expect(replies[1] == .integer(2))
            if case .error(let text) = replies[2] { #expect(text.hasPrefix("WRONGTYPE")) } else { Issue.record("expected error") }
            #expect(replies[3].string == "2")

            let results = try await client.transaction([RESPCommand("INCR", "t"), RESPCommand("INCR", "t")])
            #expect(results == [.integer(1), .integer(2)])
            let aborted = await expectRedisError {
                _ = try await client.transaction([RESPCommand("INCR", "t"), RESPCommand("NOSUCHCOMMAND")])
            }
            #expect(aborted?.serverCode == "ERR")
            #expect(try await client.get("t").map { String(buffer: $0) } == "2")  // the aborted block did nothing
        }
    }

    @Test func aLongPipelineGetsEveryReplyInOrder() async throws {
        try await withRedis { _, client in
            // Long enough that collecting replies must be linear: 50,000 commands, one round trip.
            let commands = (0..<50_000).map { RESPCommand("ECHO", .string("r\($0)")) }
            let start = ContinuousClock.now
            let replies = try await client.pipeline(commands)
            #expect(replies.count == 50_000)
            #expect(replies.enumerated().allSatisfy { $0.element.string == "r\($0.offset)" })
            #expect(start.elapsed < .seconds(20))
        }
    }

    @Test func watchOnAnExclusiveConnection() async throws {
        try await withRedis { _, client in
            try await client.set("w", to: "1")
            let conflicted = await expectRedisError {
                try await client.withExclusiveConnection { connection in
                    _ = try await connection.send(RESPCommand("WATCH", "w"))
                    try await client.set("w", to: "changed elsewhere")
                    _ = try await connection.transaction([RESPCommand("SET", "w", "mine")])
                }
            }
            #expect(conflicted != nil)
            #expect(try await client.get("w").map { String(buffer: $0) } == "changed elsewhere")
        }
    }

    /// A borrower that leaves MULTI open, another database selected and replies switched off: the
    /// next borrower got the same connection as it was (its PING answered QUEUED, its writes went
    /// to database 3). Exclusive connections are reset before they are lent again.
    @Test func theNextBorrowerOfAnExclusiveConnectionGetsItClean() async throws {
        try await withRedis(configure: { $0.poolSize = 1 }) { _, client in
            let firstID = try await client.withExclusiveConnection { connection in
                let id = try await connection.send(RESPCommand("CLIENT", "ID")).int
                _ = try await connection.send(RESPCommand("SELECT", "3"))
                _ = try await connection.send(RESPCommand("WATCH", "w"))
                _ = try await connection.send(RESPCommand("MULTI"))
                #expect(try await connection.send(RESPCommand("SET", "leaked", "1")) == .simpleString("QUEUED"))
                return id
            }
            try await client.withExclusiveConnection { connection in
                #expect(try await connection.send(RESPCommand("CLIENT", "ID")).int == firstID, "the connection is reused")
                #expect(try await connection.send(RESPCommand("PING")) == .simpleString("PONG"))
                let info = try await connection.send(RESPCommand("CLIENT", "INFO")).string ?? ""
                #expect(info.contains(" db=0 ") && info.contains(" multi=-1 ") && info.contains(" name=swift-session-cache "), "\(info)")
            }
            #expect(try await client.send(RESPCommand("EXISTS", "leaked")) == .integer(0))
        }
    }

    @Test func tenThousandConcurrentCommandsEachGetTheirOwnReply() async throws {
        try await withRedis { _, client in
            let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<100 {
                    group.addTask {
                        var wrong = 0
                        for index in 0..<100 {
                            let payload = "task-\(task)-command-\(index)"
                            // Alternate command kinds so that replies of different shapes interleave.
                            if index % 2 == 0 {
                                if try await client.send(RESPCommand("ECHO", .string(payload))).string != payload { wrong += 1 }
                            } else {
                                let reply = try await client.send(RESPCommand("INCRBY", .string("counter-\(task)"), .integer(index)))
                                let expected = stride(from: 1, through: index, by: 2).reduce(0, +)
                                if reply != .integer(expected) { wrong += 1 }
                            }
                        }
                        return wrong
                    }
                }
                var total = 0
                for try await wrong in group { total += wrong }
                return total
            }
            #expect(mismatches == 0)

            // The same with 10,000 tasks at once, one command each.
            let wrong = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<10_000 {
                    group.addTask { try await client.send(RESPCommand("ECHO", .string("v\(index)"))).string == "v\(index)" }
                }
                var wrong = 0
                for try await ok in group where !ok { wrong += 1 }
                return wrong
            }
            #expect(wrong == 0)
        }
    }

    @Test func scriptsReloadAfterScriptFlush() async throws {
        try await withRedis { _, client in
            let script = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            #expect(try await client.run(script, keys: ["s"], arguments: [5]) == .integer(5))
            #expect(try await client.send(RESPCommand("SCRIPT", "EXISTS", .string(script.sha1))) == .array([.integer(1)]))
            _ = try await client.send(RESPCommand("SCRIPT", "FLUSH"))
            #expect(try await client.send(RESPCommand("SCRIPT", "EXISTS", .string(script.sha1))) == .array([.integer(0)]))
            #expect(try await client.run(script, keys: ["s"], arguments: [2]) == .integer(7))
            #expect(try await client.send(RESPCommand("SCRIPT", "EXISTS", .string(script.sha1))) == .array([.integer(1)]))
        }
    }

    /// A caller running on one of the client's event loops is given that loop's connection, so
    /// that its reply resumes it on its own thread: the same connection every time, a different
    /// one per loop (round robin would alternate between them).
    @Test func callersOnEachEventLoopUseThatLoopsConnection() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let outcome: Result<Void, any Error>
        do {
            try await withRedis(configure: {
                $0.eventLoopGroup = group
                $0.poolSize = 2
            }) { _, client in
                #expect(client.taskExecutors.count == 2)
                // Both connections up in the pool (it starts them together; the event is not observable).
                let deadline = ContinuousClock.now + .seconds(5)
                while client.openPoolConnections.count < 2 {
                    try #require(ContinuousClock.now < deadline, "the pool's two connections did not come up")
                    try await Task.sleep(for: .milliseconds(10))
                }
                var idsPerLoop: [Set<Int>] = []
                for executor in client.taskExecutors {
                    let ids = try await withTaskExecutorPreference(executor) {
                        var ids = Set<Int>()
                        for _ in 0..<20 {
                            if case .integer(let id) = try await client.send(RESPCommand("CLIENT", "ID")) { ids.insert(id) }
                        }
                        return ids
                    }
                    #expect(ids.count == 1, "round robin would alternate between the two connections")
                    idsPerLoop.append(ids)
                }
                #expect(idsPerLoop[0] != idsPerLoop[1])
            }
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        try await group.shutdownGracefully()
        try outcome.get()
    }
}
