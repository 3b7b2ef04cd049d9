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
}
