import CHiredis
import NIOCore

/// Parses RESP replies with hiredis's reader (`redisReaderFeed` / `redisReaderGetReply`), which
/// builds them in a ``ReplyArena`` through its reply-object callbacks.
///
/// Each feed parses every complete reply at once. Their bulk strings are copied into one buffer
/// and handed out as slices of it: one allocation per read, not per reply (with 200 callers a
/// read carries about a hundred replies) or per string. A reply whose strings are large gets a
/// buffer of its own, so that a small value kept by a caller does not hold a large one's memory.
///
/// Not thread safe: one per connection, used on that connection's event loop.
final class ReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let arena: ReplyArena
    private let allocator: ByteBufferAllocator
    private var limits: ReplyLimits { arena.limits }
    /// Parsed replies not taken yet, and what came after them if hiredis refused the input.
    private var ready = CircularBuffer<RESPReply>(initialCapacity: 16)
    private var failure: HiredisError?
    /// Root node and end of its bytes in the arena, per completed reply of the current feed.
    private var roots: [(node: Int, bytesEnd: Int)] = []

    /// The longest line a reply may have before its end arrives: a status, an error, an integer or
    /// a header. hiredis scans a line's bytes again at every read until its CRLF arrives, so a line
    /// that never ends would cost time quadratic in its length (memory stays bounded by the reply
    /// limit). Redis's own lines are far shorter.
    static let maxLineBytes = 64 * 1024

    /// Replies whose strings together stay under this share one buffer.
    static let sharedBufferLimit = 16 * 1024

    init(limits: ReplyLimits = ReplyLimits(), allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        arena = ReplyArena(limits: limits)
        guard let reader = redisReaderCreateWithFunctions(ReplyArena.functions) else { fatalError("redisReaderCreate: out of memory") }
        reader.pointee.privdata = Unmanaged.passUnretained(arena).toOpaque()
        // Keep up to 1 MiB of buffer between reads rather than freeing it on every drain.
        chiredis_reader_set_max_buffer(reader, 1 << 20)
        self.reader = reader
        self.allocator = allocator
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Hands received bytes to the reader and parses every reply they complete.
    func feed(_ buffer: ByteBuffer) throws(HiredisError) {
        // Past a failure nothing more is parsed: the connection is being dropped.
        guard failure == nil else { return }
        let status = buffer.withUnsafeReadableBytes { bytes in
            redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw HiredisError.protocolError(String(cString: chiredis_reader_error(reader))) }
        parseAvailable()
        if failure == nil { failure = limitPassedByReplyInProgress() }
    }

    /// Whether the reply being read has passed a limit already: a bulk string's header announced
    /// too many bytes (refused before they arrive), or more is buffered for the reply than it may
    /// take (a line that never ends, a bulk string streamed slowly).
    private func limitPassedByReplyInProgress() -> HiredisError? {
        let buffered = chiredis_reader_buffered(reader)
        guard buffered > 0 else { return nil }
        let announced = Int(chiredis_reader_announced_bulk_length(reader))
        // No bulk string's bytes are awaited: what is buffered is one line without its end.
        if announced < 0 && buffered > Self.maxLineBytes {
            return .replyTooLarge("a line of more than \(Self.maxLineBytes) bytes")
        }
        if announced > limits.maxBulkBytes {
            return .replyTooLarge("a string of \(announced) bytes announced (limit \(limits.maxBulkBytes))")
        }
        if arena.partialBytes + max(announced, buffered) > limits.maxReplyBytes {
            return .replyTooLarge("more than \(limits.maxReplyBytes) bytes in one reply")
        }
        return nil
    }

    /// Why hiredis failed the read: a limit or type our callbacks refused, a RESP3 double or
    /// boolean (refused by the shim's callbacks, which leave hiredis to say "out of memory"), or
    /// hiredis's own protocol error.
    private func readFailure() -> HiredisError {
        if let refusal = arena.refusal { return refusal }
        let text = String(cString: chiredis_reader_error(reader))
        // Our callbacks never return NULL without a refusal; the shim's double and boolean ones do.
        if text == "Out of memory" { return .protocolError("a RESP3 double or boolean on a RESP2 connection") }
        return .protocolError(text)
    }

    /// The next complete reply, or nil when more bytes are needed. After the replies that came
    /// before a protocol error, throws it.
    func next() throws(HiredisError) -> RESPReply? {
        if let reply = ready.popFirst() { return reply }
        if let failure { throw failure }
        return nil
    }

    private func parseAvailable() {
        guard failure == nil else { return }
        while true {
            var object: UnsafeMutableRawPointer? = nil
            if redisReaderGetReply(reader, &object) != REDIS_OK {
                failure = readFailure()
                break
            }
            guard let root = ReplyArena.index(of: object) else { break }
            arena.markCompleted()
            roots.append((root, arena.completedBytes))
        }
        guard !roots.isEmpty else { return }
        if arena.completedBytes <= Self.sharedBufferLimit {
            let strings = buffer(bytesFrom: 0, to: arena.completedBytes)
            for (root, _) in roots { ready.append(value(of: root, strings: strings, base: 0)) }
        } else {
            var start = 0
            for (root, end) in roots {
                ready.append(value(of: root, strings: buffer(bytesFrom: start, to: end), base: start))
                start = end
            }
        }
        roots.removeAll(keepingCapacity: true)
        chiredis_reader_shift_objects(reader, arena.discardCompleted())
    }

    /// The arena's bytes in `start..<end` in a buffer of their own.
    private func buffer(bytesFrom start: Int, to end: Int) -> ByteBuffer {
        guard end > start else { return Self.empty }
        var buffer = allocator.buffer(capacity: end - start)
        buffer.writeBytes(UnsafeRawBufferPointer(start: arena.bytes + start, count: end - start))
        return buffer
    }

    private static let empty = ByteBuffer()

    private func value(of index: Int, strings: ByteBuffer, base: Int) -> RESPReply {
        let node = arena.nodes[index]
        switch node.type {
        case REDIS_REPLY_STRING:
            return .bulkString(strings.getSlice(at: node.start - base, length: node.count)!)
        case REDIS_REPLY_INTEGER:
            return .integer(node.start)
        case REDIS_REPLY_STATUS:
            return .simpleString(arena.text(node))
        case REDIS_REPLY_ERROR:
            return .error(arena.text(node))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPReply] = []
            elements.reserveCapacity(node.count)
            for slot in node.start..<(node.start + node.count) {
                let child = arena.slots[slot]
                if child >= 0 { elements.append(value(of: child, strings: strings, base: base)) }
            }
            return .array(elements)
        default:  // REDIS_REPLY_NIL
            return .null
        }
    }
}
