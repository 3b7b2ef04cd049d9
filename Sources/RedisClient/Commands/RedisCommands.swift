import NIOCore

/// Something that runs commands: the pooled ``RedisClient`` or one ``RedisConnection``.
///
/// Both pipeline concurrent callers automatically; the extension methods add explicit pipelines,
/// transactions and scripts on top of ``send(_:)`` and ``pipeline(_:)``.
public protocol RedisCommands: Sendable {
    /// Sends one command and returns its reply; an error reply is thrown as ``RedisError/server(_:)``.
    func send(_ command: RedisCommand) async throws -> RESPValue

    /// Sends several commands back to back (one round trip) and returns every reply in order;
    /// error replies come back as ``RESPValue/error(_:)`` values. No other caller's command is
    /// written between them.
    func pipeline(_ commands: [RedisCommand]) async throws -> [RESPValue]
}

extension RedisCommands {
    /// Runs commands inside `MULTI`/`EXEC` in one round trip and returns `EXEC`'s replies.
    ///
    /// The block is written contiguously, so it is atomic even on a shared connection; `WATCH`
    /// needs a connection of its own (``RedisClient/withExclusiveConnection(_:)``).
    ///
    /// - Throws: ``RedisError/server(_:)`` when a command is refused while queuing (Redis then
    ///   discards the whole transaction, `EXECABORT`); ``RedisError/unexpectedReply(expected:got:)``
    ///   when `EXEC` returns nil (a watched key changed).
    public func transaction(_ commands: [RedisCommand]) async throws -> [RESPValue] {
        let replies = try await pipeline([RedisCommand("MULTI")] + commands + [RedisCommand("EXEC")])
        for reply in replies.dropLast() {
            if case .error(let text) = reply { throw RedisError.server(RedisServerError(reply: text)) }
        }
        switch replies.last {
        case .array(let results)?: return results
        case .error(let text)?: throw RedisError.server(RedisServerError(reply: text))
        case let other?: throw RedisError.unexpectedReply(expected: "EXEC results", got: other)
        case nil: throw RedisError.unexpectedReply(expected: "EXEC results", got: .null)
        }
    }

    /// Runs a Lua script with `EVALSHA`, loading it first if Redis does not know it (`NOSCRIPT`).
    public func run(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument]) async throws -> RESPValue {
        let tail = [.integer(keys.count)] + keys + arguments
        do {
            return try await send(RedisCommand("EVALSHA", arguments: [.string(script.sha1)] + tail))
        } catch let error as RedisError where error.serverCode == "NOSCRIPT" {
            // EVAL both loads the script into the cache and runs it: one round trip.
            return try await send(RedisCommand("EVAL", arguments: [.string(script.source)] + tail))
        }
    }

    /// `GET key`: the value, or nil when the key does not exist.
    public func get(_ key: String) async throws -> ByteBuffer? {
        switch try await send(RedisCommand("GET", .string(key))) {
        case .bulkString(let value): return value
        case .null: return nil
        case let other: throw RedisError.unexpectedReply(expected: "bulk string", got: other)
        }
    }

    /// `SET key value [PX ttl]`.
    public func set(_ key: String, to value: RedisArgument, expiresIn ttl: Duration? = nil) async throws {
        var arguments: [RedisArgument] = [.string(key), value]
        if let ttl { arguments += ["PX", .integer(ttl.wholeMilliseconds)] }
        _ = try await send(RedisCommand("SET", arguments: arguments))
    }

    /// `DEL keys...`: how many keys were removed.
    @discardableResult
    public func delete(_ keys: [String]) async throws -> Int {
        let reply = try await send(RedisCommand("DEL", arguments: keys.map { .string($0) }))
        guard let count = reply.int else { throw RedisError.unexpectedReply(expected: "integer", got: reply) }
        return count
    }

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: RedisArgument, to channel: String) async throws -> Int {
        let reply = try await send(RedisCommand("PUBLISH", .string(channel), message))
        guard let count = reply.int else { throw RedisError.unexpectedReply(expected: "integer", got: reply) }
        return count
    }
}
