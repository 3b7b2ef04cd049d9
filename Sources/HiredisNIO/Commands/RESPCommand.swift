import NIOCore

/// One argument of a command: binary safe.
public enum RESPArgument: Sendable, Hashable {
    case string(String)
    case bytes([UInt8])
    case buffer(ByteBuffer)
    case integer(Int)

    var sizeHint: Int {
        switch self {
        case .string(let text): return text.utf8.count
        case .bytes(let bytes): return bytes.count
        case .buffer(let buffer): return buffer.readableBytes
        case .integer: return 21
        }
    }
}

extension RESPArgument: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }
}

/// A Redis command and its arguments, for example `RESPCommand("SET", "key", "value")`.
public struct RESPCommand: Sendable, Hashable {
    /// The command name followed by its arguments.
    public var arguments: [RESPArgument]

    /// A command from its name and arguments.
    public init(_ name: String, _ arguments: RESPArgument...) {
        self.init(name, arguments: arguments)
    }

    /// A command from its name and an argument array.
    public init(_ name: String, arguments: [RESPArgument]) {
        // One allocation (`[name] + arguments` made two: every command pays for it).
        var all: [RESPArgument] = []
        all.reserveCapacity(arguments.count + 1)
        all.append(.string(name))
        all.append(contentsOf: arguments)
        self.arguments = all
    }

    /// A command whose arguments `build` appends after the name, into one array of room for
    /// `capacity` of them: no intermediate arrays for a command assembled from parts.
    package init(_ name: String, capacity: Int, _ build: (inout [RESPArgument]) -> Void) {
        var all: [RESPArgument] = []
        all.reserveCapacity(capacity + 1)
        all.append(.string(name))
        build(&all)
        self.arguments = all
    }

    /// The command's name, as sent (for logs and metrics).
    public var name: String {
        if case .string(let name) = arguments.first { return name }
        return "?"
    }

    var encodedSizeHint: Int { arguments.reduce(0) { $0 + $1.sizeHint } }
}

extension RESPCommand {
    /// The Redis Cluster slot the command must go to: the slot of its first key, nil for a
    /// command without one (`PING`, `TIME`, `INFO`, `FUNCTION`, `PUBLISH`, ...), which any node
    /// may serve. Functions and scripts route by their first declared key.
    public var slot: Int? {
        guard let key = firstKeyIndex, key < arguments.count else { return nil }
        switch arguments[key] {
        case .string(let text): return HashSlot.of(text)
        case .bytes(let bytes): return HashSlot.of(bytes)
        case .buffer(let buffer): return HashSlot.of(buffer.readableBytesView)
        case .integer(let value): return HashSlot.of(String(value))
        }
    }

    /// Where the first key is among the arguments (0 is the name), by the command's key spec.
    private var firstKeyIndex: Int? {
        // Our own commands are upper case; anything else pays for one uppercasing.
        let name = self.name.utf8.allSatisfy { $0 < 0x61 || $0 > 0x7a } ? self.name : self.name.uppercased()
        switch name {
        case "FCALL", "FCALL_RO", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO":
            guard arguments.count > 3, case .integer(let count) = arguments[2], count > 0 else {
                if arguments.count > 3, case .string(let text) = arguments[2], let count = Int(text), count > 0 { return 3 }
                return nil
            }
            return 3
        case "MEMORY", "OBJECT", "XINFO", "XGROUP", "BITOP":
            // A subcommand (or BITOP's operation) comes first.
            return 2
        case "LMPOP", "ZMPOP", "SINTERCARD", "ZUNION", "ZINTER", "ZDIFF", "ZINTERCARD":
            // numkeys key [key ...]
            return 2
        case "BLMPOP", "BZMPOP":
            // timeout numkeys key [key ...]
            return 3
        case "XREAD", "XREADGROUP":
            // ... STREAMS key [key ...] id [id ...]
            return arguments.firstIndex { if case .string(let text) = $0 { return text.uppercased() == "STREAMS" } else { return false } }
                .map { $0 + 1 }
        default:
            return Self.keyless.contains(name) ? nil : 1
        }
    }

    /// Whether the command only reads (Redis flags it `readonly`), so that a replica in
    /// `READONLY` mode may serve it (``HiredisConfiguration/readFromReplicas``). Blocking reads
    /// and commands not listed count as writes.
    public var isReadOnly: Bool {
        let name = self.name.utf8.allSatisfy { $0 < 0x61 || $0 > 0x7a } ? self.name : self.name.uppercased()
        return Self.readOnly.contains(name)
    }

    /// Whether the command runs a script or a function (`FCALL`, `FCALL_RO`, `EVAL`, `EVALSHA`
    /// and their `_RO` forms), which may read keys it did not declare.
    var runsScript: Bool {
        switch name.uppercased() {
        case "FCALL", "FCALL_RO", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO": true
        default: false
        }
    }

    /// Whether the command, keyless, describes the keyed command before it in a pipeline and must
    /// run on the same node (`WAIT` counts that connection's writes, `TIME` is that node's clock):
    /// a redirected command takes these along. Only reads: sending them twice is harmless.
    var describesTheCommandBefore: Bool {
        guard slot == nil else { return false }
        let name = self.name.uppercased()
        return name == "WAIT" || name == "WAITAOF" || Self.readOnly.contains(name)
    }

    private static let readOnly: Set<String> = [
        "GET", "MGET", "STRLEN", "GETRANGE", "SUBSTR", "EXISTS", "TYPE", "TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME", "DUMP",
        "GETBIT", "BITCOUNT", "BITPOS", "BITFIELD_RO", "LCS", "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS",
        "HSTRLEN", "HRANDFIELD", "HSCAN", "LRANGE", "LLEN", "LINDEX", "LPOS", "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD",
        "SRANDMEMBER", "SSCAN", "SINTER", "SUNION", "SDIFF", "SINTERCARD", "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE",
        "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX", "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZRANK",
        "ZREVRANK", "ZSCAN", "ZRANDMEMBER", "ZUNION", "ZINTER", "ZDIFF", "ZINTERCARD", "XRANGE", "XREVRANGE", "XLEN",
        "PFCOUNT", "GEOPOS", "GEODIST", "GEOHASH", "GEOSEARCH", "GEORADIUS_RO", "GEORADIUSBYMEMBER_RO", "SORT_RO",
        "FCALL_RO", "EVAL_RO", "EVALSHA_RO",
        // Keyless, and harmless to send again (never to a replica: they carry no slot).
        "TIME", "PING", "ECHO",
    ]

    private static let keyless: Set<String> = [
        "PING", "ECHO", "TIME", "INFO", "FUNCTION", "SCRIPT", "CONFIG", "CLUSTER", "SCAN", "DBSIZE", "FLUSHALL", "FLUSHDB",
        "CLIENT", "HELLO", "AUTH", "SELECT", "MULTI", "EXEC", "DISCARD", "ROLE", "COMMAND", "PUBLISH", "WAIT", "WAITAOF",
        "ASKING", "READONLY", "READWRITE", "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "PUBSUB", "SLOWLOG",
        "LATENCY", "DEBUG", "SAVE", "BGSAVE", "BGREWRITEAOF", "LASTSAVE", "SHUTDOWN", "REPLICAOF", "SLAVEOF", "FAILOVER",
        "SENTINEL", "RANDOMKEY", "KEYS", "SWAPDB", "LOLWUT", "ACL", "MODULE", "QUIT", "RESET", "UNWATCH",
    ]
}
