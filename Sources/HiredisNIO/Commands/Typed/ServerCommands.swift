// Typed server commands (no key): their replies decoded here, nowhere else.

/// Redis's clock, as `TIME` answers it.
public struct RedisTime: Sendable, Hashable {
    /// Whole seconds since the Unix epoch.
    public var seconds: Int
    /// Microseconds within the second.
    public var microseconds: Int

    /// Microseconds since the Unix epoch.
    public var totalMicroseconds: Int { seconds * 1_000_000 + microseconds }
    /// Milliseconds since the Unix epoch.
    public var milliseconds: Int { seconds * 1000 + microseconds / 1000 }
}

/// `TIME`: the server's clock.
public struct TIME: HiredisCommand {
    public init() {}
    public var command: RESPCommand { RESPCommand("TIME") }

    public func decode(_ reply: RESPReply) throws -> RedisTime {
        guard let parts = reply.array, parts.count == 2, let seconds = parts[0].int, let microseconds = parts[1].int,
            seconds >= 0, (0..<1_000_000).contains(microseconds)
        else { throw HiredisError.unexpectedReply(expected: "TIME's seconds and microseconds", got: reply) }
        return RedisTime(seconds: seconds, microseconds: microseconds)
    }
}

/// `WAIT numreplicas timeout`: blocks until that many replicas acknowledged this connection's
/// writes, or the timeout passes. Its response is how many did (send it in the same pipeline as
/// the write: it counts the connection's writes).
public struct WAIT: HiredisCommand {
    public var replicas: Int
    public var timeout: Duration

    public init(replicas: Int, timeout: Duration) {
        self.replicas = replicas
        self.timeout = timeout
    }

    public var command: RESPCommand { RESPCommand("WAIT", .integer(replicas), .integer(timeout.wholeMilliseconds)) }

    public func decode(_ reply: RESPReply) throws -> Int {
        guard let count = reply.int else { throw HiredisError.unexpectedReply(expected: "integer", got: reply) }
        return count
    }
}

/// `CONFIG GET parameter`: its value, nil when the server has no such parameter.
public struct CONFIG_GET: HiredisCommand {
    public var parameter: String

    public init(_ parameter: String) { self.parameter = parameter }

    public var command: RESPCommand { RESPCommand("CONFIG", "GET", .string(parameter)) }

    public func decode(_ reply: RESPReply) throws -> String? {
        // RESP2: a flat array of name, value pairs (empty when unknown).
        guard let parts = reply.array, parts.count.isMultiple(of: 2) else {
            throw HiredisError.unexpectedReply(expected: "CONFIG GET pairs", got: reply)
        }
        return stride(from: 0, to: parts.count, by: 2).first { parts[$0].string == parameter }.flatMap { parts[$0 + 1].string }
    }
}

/// `CONFIG SET parameter value`.
public struct CONFIG_SET: HiredisCommand {
    public var parameter: String
    public var value: String

    public init(_ parameter: String, _ value: String) {
        self.parameter = parameter
        self.value = value
    }

    public var command: RESPCommand { RESPCommand("CONFIG", "SET", .string(parameter), .string(value)) }

    public func decode(_ reply: RESPReply) throws {}
}
