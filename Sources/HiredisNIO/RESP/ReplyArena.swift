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

    init() {
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

    fileprivate func addString(_ task: UnsafePointer<redisReadTask>, _ text: UnsafeRawPointer?, _ count: Int) -> UnsafeMutableRawPointer? {
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
        let node = Node(type: REDIS_REPLY_ARRAY, start: slots.count, count: count)
        slots.append(contentsOf: repeatElement(-1, count: count))
        return add(node, task: task)
    }

    fileprivate func addValue(_ task: UnsafePointer<redisReadTask>, type: Int32, _ value: Int) -> UnsafeMutableRawPointer? {
        add(Node(type: type, start: value, count: 0), task: task)
    }

    /// hiredis's callbacks for a reader whose `privdata` is an unretained reference to an arena.
    /// (Initialized once, never written again: hiredis only reads it.)
    nonisolated(unsafe) static let functions: UnsafeMutablePointer<redisReplyObjectFunctions> = {
        let functions = UnsafeMutablePointer<redisReplyObjectFunctions>.allocate(capacity: 1)
        functions.initialize(
            to: redisReplyObjectFunctions(
                createString: { task, text, count in
                    guard let task else { return nil }
                    return arena(task).addString(task, text, count)
                },
                createArray: { task, count in
                    guard let task else { return nil }
                    return arena(task).addArray(task, Int(count))
                },
                createInteger: { task, value in
                    guard let task else { return nil }
                    return arena(task).addValue(task, type: REDIS_REPLY_INTEGER, Int(value))
                },
                createNil: { task in
                    guard let task else { return nil }
                    return arena(task).addValue(task, type: REDIS_REPLY_NIL, 0)
                },
                // Nothing to free: the arena is reset as a whole.
                freeObject: { _ in }))
        return functions
    }()

    private static func arena(_ task: UnsafePointer<redisReadTask>) -> ReplyArena {
        Unmanaged<ReplyArena>.fromOpaque(task.pointee.privdata!).takeUnretainedValue()
    }
}
