// Typed key commands: their replies decoded here, nowhere else.

/// `SET key value [NX|XX] [PX ms]`: whether the value was set (with `NX`, false when the key
/// existed; with `XX`, false when it did not).
public struct SET: HiredisCommand {
    public var key: String
    public var value: RESPArgument
    /// Only when the key does not exist (`NX`).
    public var onlyIfAbsent: Bool
    public var expiresIn: Duration?
    /// Only when the key exists (`XX`).
    public var onlyIfPresent: Bool

    public init(
        _ key: String, _ value: RESPArgument, onlyIfAbsent: Bool = false, expiresIn: Duration? = nil, onlyIfPresent: Bool = false
    ) {
        self.key = key
        self.value = value
        self.onlyIfAbsent = onlyIfAbsent
        self.expiresIn = expiresIn
        self.onlyIfPresent = onlyIfPresent
    }

    public var command: RESPCommand {
        RESPCommand("SET", capacity: 5) { arguments in
            arguments.append(.string(key))
            arguments.append(value)
            if onlyIfAbsent { arguments.append("NX") }
            if onlyIfPresent { arguments.append("XX") }
            if let expiresIn {
                arguments.append("PX")
                arguments.append(.integer(expiresIn.wholeMilliseconds))
            }
        }
    }

    public func decode(_ reply: RESPReply) throws -> Bool {
        switch reply {
        case .simpleString: return true
        case .null: return false
        default: throw HiredisError.unexpectedReply(expected: "OK or nil", got: reply)
        }
    }
}

/// `HGETALL key`: the hash's fields and values, alternating (empty when the key does not exist).
public struct HGETALL: HiredisCommand {
    public var key: String

    public init(_ key: String) { self.key = key }

    public var command: RESPCommand { RESPCommand("HGETALL", .string(key)) }

    public func decode(_ reply: RESPReply) throws -> [RESPReply] {
        guard let parts = reply.array, parts.count.isMultiple(of: 2) else {
            throw HiredisError.unexpectedReply(expected: "field, value pairs", got: reply)
        }
        return parts
    }
}

/// `LRANGE key start stop`: the list's elements in that range (empty when the key does not exist).
public struct LRANGE: HiredisCommand {
    public var key: String
    public var start: Int
    public var stop: Int

    public init(_ key: String, start: Int = 0, stop: Int = -1) {
        self.key = key
        self.start = start
        self.stop = stop
    }

    public var command: RESPCommand { RESPCommand("LRANGE", .string(key), .integer(start), .integer(stop)) }

    public func decode(_ reply: RESPReply) throws -> [RESPReply] {
        guard let parts = reply.array else { throw HiredisError.unexpectedReply(expected: "array", got: reply) }
        return parts
    }
}
