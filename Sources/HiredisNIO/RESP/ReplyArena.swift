import CHiredis

/// Where hiredis's reader builds replies, through its reply-object callbacks
/// (`redisReaderCreateWithFunctions`): nodes in one array, string bytes in one block, both reused
/// from read to read. hiredis's own reply objects cost a `calloc` per reply and per array element
/// and a `malloc` per string, all freed again right after we copied them out.
///
/// A callback's "object" is its node's index plus one (hiredis treats NULL as out of memory); a
/// child links itself into its parent's slots. Replies are read back with ``strings(of:)`` and
/// ``markCompleted()`` and read back until ``discardCompleted()``.
final class ReplyArena {
    struct Node {
        /// `REDIS_REPLY_STRING`, `_ARRAY`, `_INTEGER`, `_NIL`, `_STATUS` or `_ERROR`.
        var type: Int32
        /// Strings: offset of the bytes; arrays: first slot in `slots`; integers: the value.
        var start: Int
        /// Strings: byte count; arrays: element count.
        var count: Int
    }

    private(set) var nodes: [Node] = []
    /// Arrays' elements, as node indices.
    private(set) var slots: [Int] = []
    private(set) var bytes: UnsafeMutableRawPointer
    private(set) var byteCount = 0
    private var byteCapacity: Int

    /// What one reply may take; a callback past a limit refuses (hiredis then fails the read).
    let limits: ReplyLimits
    /// Why a callback refused to build a node: a limit passed, or a type RESP2 does not have.
    private(set) var refusal: HiredisError?

    init(limits: ReplyLimits = ReplyLimits()) {
        self.limits = limits
        byteCapacity = Self.initialByteCapacity
        bytes = .allocate(byteCount: byteCapacity, alignment: 1)
        nodes.reserveCapacity(256)
    }

    deinit { bytes.deallocate() }

    private static let initialByteCapacity = 16 * 1024

    /// Where the replies completed so far end: nodes, slots and bytes past these belong to a
    /// reply hiredis is still reading.
    private(set) var completedNodes = 0
    private(set) var completedSlots = 0
    private(set) var completedBytes = 0

    /// The reply just returned by hiredis is complete.
    func markCompleted() {
        completedNodes = nodes.count
        completedSlots = slots.count
        completedBytes = byteCount
    }

    /// Forgets the completed replies and moves the one hiredis is still reading (if any) to the
    /// start. Returns by how much its node indices went down (hiredis's open tasks must be told:
    /// `chiredis_reader_shift_objects`). Keeps the memory unless one large reply grew it past 1 MiB.
    func discardCompleted() -> Int {
        let shift = completedNodes
        if shift > 0 || completedSlots > 0 {
            nodes.removeFirst(completedNodes)
            for index in nodes.indices {
                switch nodes[index].type {
                case REDIS_REPLY_ARRAY: nodes[index].start -= completedSlots
                case REDIS_REPLY_STRING, REDIS_REPLY_STATUS, REDIS_REPLY_ERROR: nodes[index].start -= completedBytes
                default: break
                }
            }
            slots.removeFirst(completedSlots)
            for index in slots.indices where slots[index] >= 0 { slots[index] -= shift }
        }
        let partialBytes = byteCount - completedBytes
        if partialBytes > 0 { bytes.copyMemory(from: bytes + completedBytes, byteCount: partialBytes) }
        byteCount = partialBytes
        if byteCapacity > 1 << 20, byteCount <= Self.initialByteCapacity {
            let smaller = UnsafeMutableRawPointer.allocate(byteCount: Self.initialByteCapacity, alignment: 1)
            smaller.copyMemory(from: bytes, byteCount: byteCount)
            bytes.deallocate()
            bytes = smaller
            byteCapacity = Self.initialByteCapacity
        }
        if nodes.isEmpty, nodes.capacity > 65_536 { nodes = [] }
        if slots.isEmpty, slots.capacity > 65_536 { slots = [] }
        completedNodes = 0
        completedSlots = 0
        completedBytes = 0
        return shift
    }

    /// A status or error reply's text.
    func text(_ node: Node) -> String {
        String(decoding: UnsafeRawBufferPointer(start: bytes + node.start, count: node.count), as: UTF8.self)
    }

    /// The node a callback's object names.
    static func index(of object: UnsafeMutableRawPointer?) -> Int? {
        object.map { Int(bitPattern: $0) - 1 }
    }

    private func add(_ node: Node, task: UnsafePointer<redisReadTask>) -> UnsafeMutableRawPointer? {
        let index = nodes.count
        nodes.append(node)
        if let parent = task.pointee.parent, let parentIndex = Self.index(of: parent.pointee.obj) {
            slots[nodes[parentIndex].start + Int(task.pointee.idx)] = index
        }
        return UnsafeMutableRawPointer(bitPattern: index + 1)
    }

    /// Bytes and elements of the reply being read (the completed ones before it are not counted).
    var partialBytes: Int { byteCount - completedBytes }
    var partialElements: Int { slots.count - completedSlots }

    /// Records why a callback refuses and returns the NULL object that makes hiredis fail.
    private func refuse(_ error: HiredisError) -> UnsafeMutableRawPointer? {
        if refusal == nil { refusal = error }
        return nil
    }

    /// A RESP3 type (map, set, push, attribute, verbatim string, big number, RESP3 null) that
    /// hiredis 1.x parses whatever the protocol: we speak RESP2, so it is a broken or hostile peer.
    private func refuseType(_ type: Int32) -> UnsafeMutableRawPointer? {
        refuse(.protocolError("a reply of RESP3 type \(type) on a RESP2 connection"))
    }

    fileprivate func addString(_ task: UnsafePointer<redisReadTask>, _ text: UnsafeRawPointer?, _ count: Int) -> UnsafeMutableRawPointer? {
        let type = task.pointee.type
        guard type == REDIS_REPLY_STRING || type == REDIS_REPLY_STATUS || type == REDIS_REPLY_ERROR else { return refuseType(type) }
        if count < 0 || count > limits.maxBulkBytes {
            return refuse(.replyTooLarge("a string of \(count) bytes (limit \(limits.maxBulkBytes))"))
        }
        if partialBytes + count > limits.maxReplyBytes {
            return refuse(.replyTooLarge("more than \(limits.maxReplyBytes) bytes in one reply"))
        }
        if byteCount + count > byteCapacity {
            let grown = UnsafeMutableRawPointer.allocate(byteCount: max(byteCapacity * 2, byteCount + count), alignment: 1)
            grown.copyMemory(from: bytes, byteCount: byteCount)
            bytes.deallocate()
            bytes = grown
            byteCapacity = max(byteCapacity * 2, byteCount + count)
        }
        if count > 0, let text { (bytes + byteCount).copyMemory(from: text, byteCount: count) }
        let node = Node(type: task.pointee.type, start: byteCount, count: count)
        byteCount += count
        return add(node, task: task)
    }

    fileprivate func addArray(_ task: UnsafePointer<redisReadTask>, _ count: Int) -> UnsafeMutableRawPointer? {
        guard task.pointee.type == REDIS_REPLY_ARRAY else { return refuseType(task.pointee.type) }
        // Checked before a slot is made: `*2147483647` alone would otherwise fill 16 GiB.
        if count < 0 { return refuse(.protocolError("an array of negative length")) }
        if count > limits.maxElements - partialElements {
            return refuse(.replyTooLarge("more than \(limits.maxElements) elements in one reply"))
        }
        var depth = 1
        var parent = task.pointee.parent
        while let outer = parent {
            depth += 1
            if depth > limits.maxNesting { return refuse(.replyTooLarge("arrays nested more than \(limits.maxNesting) deep")) }
            parent = outer.pointee.parent
        }
        let node = Node(type: REDIS_REPLY_ARRAY, start: slots.count, count: count)
        slots.append(contentsOf: repeatElement(-1, count: count))
        return add(node, task: task)
    }

    fileprivate func addValue(_ task: UnsafePointer<redisReadTask>, type: Int32, _ value: Int) -> UnsafeMutableRawPointer? {
        // A nil comes from `$-1` or `*-1` (the task's type is string or array); RESP3's `_` has
        // a type of its own.
        let taskType = task.pointee.type
        let allowed = type == REDIS_REPLY_NIL ? taskType == REDIS_REPLY_STRING || taskType == REDIS_REPLY_ARRAY : taskType == type
        guard allowed else { return refuseType(taskType) }
        return add(Node(type: type, start: value, count: 0), task: task)
    }

    /// hiredis's callbacks for a reader whose `privdata` is an unretained reference to an arena.
    /// (Initialized once, never written again: hiredis only reads it.)
    /// (hiredis 0.14 and 1.x differ in the callbacks' number and types: the shim fills them.)
    nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let functions = chiredis_reply_functions(
            { task, text, count in
                guard let task else { return nil }
                return arena(task).addString(task, text, count)
            },
            { task, count in
                guard let task else { return nil }
                return arena(task).addArray(task, Int(count))
            },
            { task, value in
                guard let task else { return nil }
                return arena(task).addValue(task, type: REDIS_REPLY_INTEGER, Int(value))
            },
            { task in
                guard let task else { return nil }
                return arena(task).addValue(task, type: REDIS_REPLY_NIL, 0)
            },
            // Nothing to free: the arena is reset as a whole.
            { _ in })
        guard let functions else { fatalError("chiredis_reply_functions: out of memory") }
        return functions
    }()

    private static func arena(_ task: UnsafePointer<redisReadTask>) -> ReplyArena {
        Unmanaged<ReplyArena>.fromOpaque(task.pointee.privdata!).takeUnretainedValue()
    }
}
