import CHiredis
import NIOCore

/// Parses RESP replies with hiredis's reader (`redisReaderFeed` / `redisReaderGetReply`).
///
/// Not thread safe: one per connection, used on that connection's event loop.
final class ReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let allocator: ByteBufferAllocator

    init(allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        guard let reader = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        // Keep up to 1 MiB of buffer between reads rather than freeing it on every drain.
        chiredis_reader_set_max_buffer(reader, 1 << 20)
        self.reader = reader
        self.allocator = allocator
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Hands received bytes to the reader.
    func feed(_ buffer: ByteBuffer) throws(HiredisError) {
        let status = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw HiredisError.protocolError(String(cString: chiredis_reader_error(reader))) }
    }

    /// The next complete reply, or nil when more bytes are needed.
    func next() throws(HiredisError) -> RESPReply? {
        var reply: UnsafeMutableRawPointer? = nil
        if redisReaderGetReply(reader, &reply) != REDIS_OK {
            throw HiredisError.protocolError(String(cString: chiredis_reader_error(reader)))
        }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        let root = reply.assumingMemoryBound(to: redisReply.self)
        // Every bulk string of the reply goes into one buffer, each a slice of it: one allocation
        // per reply, not per element (an HGETALL of a session has dozens). All bytes are written
        // before the first slice is taken: a write to a buffer that a slice shares copies it whole
        // (copy on write), which made a reply of n strings cost n copies.
        var storage = allocator.buffer(capacity: Self.stringBytes(of: root))
        Self.copyStrings(of: root, into: &storage)
        var offset = 0
        return value(of: root, strings: storage, offset: &offset)
    }

    /// Writes the reply's bulk strings into `storage`, depth first (the order ``value(of:strings:offset:)`` reads them).
    private static func copyStrings(of reply: UnsafeMutablePointer<redisReply>, into storage: inout ByteBuffer) {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            storage.writeBytes(UnsafeRawBufferPointer(start: node.str, count: node.len))
        case REDIS_REPLY_ARRAY:
            for index in 0..<node.elements { if let child = node.element[index] { copyStrings(of: child, into: &storage) } }
        default:
            break
        }
    }

    private static func stringBytes(of reply: UnsafeMutablePointer<redisReply>) -> Int {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING: return node.len
        case REDIS_REPLY_ARRAY:
            var total = 0
            for index in 0..<node.elements { if let child = node.element[index] { total += stringBytes(of: child) } }
            return total
        default: return 0
        }
    }

    private func value(of reply: UnsafeMutablePointer<redisReply>, strings: ByteBuffer, offset: inout Int) -> RESPReply {
        let node = reply.pointee
        switch node.type {
        case REDIS_REPLY_STRING:
            let start = offset
            offset += node.len
            return .bulkString(strings.getSlice(at: start, length: node.len)!)
        case REDIS_REPLY_INTEGER:
            return .integer(Int(node.integer))
        case REDIS_REPLY_STATUS:
            return .simpleString(text(node))
        case REDIS_REPLY_ERROR:
            return .error(text(node))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPReply] = []
            elements.reserveCapacity(node.elements)
            for index in 0..<node.elements {
                if let child = node.element[index] { elements.append(value(of: child, strings: strings, offset: &offset)) }
            }
            return .array(elements)
        default:  // REDIS_REPLY_NIL
            return .null
        }
    }

    private func text(_ node: redisReply) -> String {
        String(decoding: UnsafeRawBufferPointer(start: node.str, count: node.len), as: UTF8.self)
    }
}
