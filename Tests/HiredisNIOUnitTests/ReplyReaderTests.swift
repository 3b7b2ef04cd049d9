import NIOCore
import Testing

@testable import HiredisNIO

@Suite("Reply reader")
struct ReplyReaderTests {
    @Test func theStringsOfAnArrayReplyShareOneBuffer() throws {
        // SLOWLOG GET or an HGETALL of a big hash: many bulk strings in nested arrays.
        var wire = "*1000\r\n"
        for index in 0..<1000 {
            let text = "value-\(index)"
            wire +=
                index.isMultiple(of: 10) ? "*2\r\n$\(text.utf8.count)\r\n\(text)\r\n:\(index)\r\n" : "$\(text.utf8.count)\r\n\(text)\r\n"
        }
        let reader = ReplyReader()
        try reader.feed(ByteBuffer(string: wire))
        let reply = try #require(try reader.next())
        let elements = try #require(reply.array)
        #expect(elements.count == 1000)
        var buffers: [ByteBuffer] = []
        for (index, element) in elements.enumerated() {
            if index.isMultiple(of: 10) {
                #expect(element.array?.first?.string == "value-\(index)")
                #expect(element.array?.last == .integer(index))
                if case .bulkString(let buffer)? = element.array?.first { buffers.append(buffer) }
            } else {
                #expect(element.string == "value-\(index)")
                if case .bulkString(let buffer) = element { buffers.append(buffer) }
            }
        }
        // One allocation for the whole reply: every string is a slice of the same storage (a write
        // after the first slice would have copied it, once per string).
        let bases = Set(
            buffers.map { buffer in buffer.withUnsafeReadableBytesWithStorageManagement { _, storage in storage.toOpaque() } })
        #expect(buffers.count == 1000 && bases.count == 1, "\(bases.count) storages")
        #expect(try reader.next() == nil)
    }

    /// Replies of every shape, fed whole, in random pieces and byte by byte: hiredis builds them in
    /// the arena while the arena drops completed replies and moves a partial one to its start.
    @Test func repliesSurviveEveryWayTheBytesArrive() throws {
        let big = String(repeating: "b", count: 40_000)
        let expected: [RESPReply] =
            [
                .simpleString("OK"), .error("ERR wrong"), .integer(-42), .integer(Int(Int64.max)), .null,
                .bulkString(ByteBuffer(string: "")), .bulkString(ByteBuffer(bytes: [0, 13, 10, 255, 36, 42])),
                .array([]), .array([.null, .integer(1), .array([.bulkString(ByteBuffer(string: "deep")), .array([.simpleString("x")])])]),
                .bulkString(ByteBuffer(string: big)),
                .array((0..<300).map { .bulkString(ByteBuffer(string: "field-\($0)")) }),
            ] + (0..<200).map { .bulkString(ByteBuffer(string: "v\($0)")) }
        var wire = ByteBuffer()
        for reply in expected { Self.encode(reply, into: &wire) }

        var seed: UInt64 = 42
        let splits: [(String, () -> Int)] = [
            ("whole", { wire.readableBytes }), ("bytes", { 1 }),
            (
                "random up to 64 bytes",
                {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    return Int(seed >> 58) + 1
                }
            ),
            (
                "random up to 4 KiB",
                {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    return Int(seed >> 52) + 1
                }
            ),
        ]
        for (name, pieceSize) in splits {
            let reader = ReplyReader()
            var replies: [RESPReply] = []
            var rest = wire
            while rest.readableBytes > 0 {
                let piece = rest.readSlice(length: min(pieceSize(), rest.readableBytes))!
                try reader.feed(piece)
                while let reply = try reader.next() { replies.append(reply) }
            }
            // Compared one by one: printing 40 KB of mismatch helps nobody.
            #expect(replies.count == expected.count, "fed \(name): \(replies.count) replies")
            if let first = replies.indices.first(where: { $0 < expected.count && replies[$0] != expected[$0] }) {
                Issue.record("fed \(name): reply \(first) is \(String(describing: replies[first]).prefix(200))")
            }
        }
    }

    /// The replies of one read share one buffer; once their strings pass the shared limit, each
    /// reply gets its own (a small value kept by a caller must not hold a large one's memory).
    @Test func aReadsRepliesShareOneBufferUnlessLarge() throws {
        func storages(_ replies: [RESPReply]) -> Int {
            Set(
                replies.compactMap { reply -> UnsafeMutableRawPointer? in
                    guard case .bulkString(let buffer) = reply else { return nil }
                    return buffer.withUnsafeReadableBytesWithStorageManagement { _, storage in storage.toOpaque() }
                }
            ).count
        }
        func read(_ replies: [RESPReply]) throws -> [RESPReply] {
            var wire = ByteBuffer()
            for reply in replies { Self.encode(reply, into: &wire) }
            let reader = ReplyReader()
            try reader.feed(wire)
            var read: [RESPReply] = []
            while let reply = try reader.next() { read.append(reply) }
            #expect(read == replies)
            return read
        }
        let small = (0..<100).map { RESPReply.bulkString(ByteBuffer(string: "value-\($0)")) }
        #expect(try storages(read(small)) == 1)
        let large = small + [.bulkString(ByteBuffer(repeating: 7, count: ReplyReader.sharedBufferLimit))]
        #expect(try storages(read(large)) == large.count)
    }

    /// Garbage after good replies: the good ones are handed out, then the error.
    @Test func aProtocolErrorComesAfterTheRepliesBeforeIt() throws {
        let reader = ReplyReader()
        try reader.feed(ByteBuffer(string: "+first\r\n:2\r\n?garbage\r\n"))
        #expect(try reader.next() == .simpleString("first"))
        #expect(try reader.next() == .integer(2))
        #expect(throws: HiredisError.self) { try reader.next() }
        #expect(throws: HiredisError.self) { try reader.next() }
    }

    private static func encode(_ reply: RESPReply, into wire: inout ByteBuffer) {
        switch reply {
        case .simpleString(let text): wire.writeString("+\(text)\r\n")
        case .error(let text): wire.writeString("-\(text)\r\n")
        case .integer(let value): wire.writeString(":\(value)\r\n")
        case .null: wire.writeString("$-1\r\n")
        case .bulkString(let bytes):
            wire.writeString("$\(bytes.readableBytes)\r\n")
            wire.writeImmutableBuffer(bytes)
            wire.writeString("\r\n")
        case .array(let elements):
            wire.writeString("*\(elements.count)\r\n")
            for element in elements { encode(element, into: &wire) }
        }
    }
}
