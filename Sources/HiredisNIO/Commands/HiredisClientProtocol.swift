import NIOCore

/// Something that runs commands: the pooled ``HiredisClient`` or one ``HiredisConnection``.
///
/// Both pipeline concurrent callers automatically; the extension methods add explicit pipelines,
/// transactions and scripts on top of ``send(_:)`` and ``pipeline(_:)``.
public protocol HiredisClientProtocol: Sendable {
    /// Sends one command and returns its reply; an error reply is thrown as ``HiredisError/server(_:)``.
    func send(_ command: RESPCommand) async throws -> RESPReply

    /// Sends several commands back to back (one round trip) and returns every reply in order;
    /// error replies come back as ``RESPReply/error(_:)`` values. No other caller's command is
    /// written between them.
    func pipeline(_ commands: [RESPCommand]) async throws -> [RESPReply]
}

extension HiredisClientProtocol {
    /// Runs commands inside `MULTI`/`EXEC` in one round trip and returns `EXEC`'s replies.
    ///
    /// The block is written contiguously, so it is atomic even on a shared connection; `WATCH`
    /// needs a connection of its own (``HiredisClient/withExclusiveConnection(key:_:)``).
    ///
    /// - Throws: ``HiredisError/server(_:)`` when a command is refused while queuing (Redis then
    ///   discards the whole transaction, `EXECABORT`); ``HiredisError/unexpectedReply(expected:got:)``
    ///   when `EXEC` returns nil (a watched key changed).
    public func transaction(_ commands: [RESPCommand]) async throws -> [RESPReply] {
        try Self.results(ofTransaction: try await pipeline([RESPCommand("MULTI")] + commands + [RESPCommand("EXEC")]))
    }

    /// `EXEC`'s results from the replies to `MULTI`, the queued commands and `EXEC`.
    static func results(ofTransaction replies: [RESPReply]) throws -> [RESPReply] {
        for reply in replies.dropLast() {
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
        }
        switch replies.last {
        case .array(let results)?: return results
        case .error(let text)?: throw HiredisError.server(HiredisServerError(reply: text))
        case let other?: throw HiredisError.unexpectedReply(expected: "EXEC results", got: other)
        case nil: throw HiredisError.unexpectedReply(expected: "EXEC results", got: .null)
        }
    }

    /// Runs a Lua script with `EVALSHA`, loading it first if Redis does not know it (`NOSCRIPT`).
    public func run(_ script: LuaScript, keys: [RESPArgument], arguments: [RESPArgument]) async throws -> RESPReply {
        let tail = [.integer(keys.count)] + keys + arguments
        do {
            return try await send(RESPCommand("EVALSHA", arguments: [.string(script.sha1)] + tail))
        } catch let error as HiredisError where error.serverCode == "NOSCRIPT" {
            // EVAL both loads the script into the cache and runs it: one round trip.
            return try await send(RESPCommand("EVAL", arguments: [.string(script.source)] + tail))
        }
    }

    /// `GET key`: the value, or nil when the key does not exist.
    public func get(_ key: String) async throws -> ByteBuffer? {
        switch try await send(RESPCommand("GET", .string(key))) {
        case .bulkString(let value): return value
        case .null: return nil
        case let other: throw HiredisError.unexpectedReply(expected: "bulk string", got: other)
        }
    }

    /// `SET key value [PX ttl]`.
    public func set(_ key: String, to value: RESPArgument, expiresIn ttl: Duration? = nil) async throws {
        var arguments: [RESPArgument] = [.string(key), value]
        if let ttl { arguments += ["PX", .integer(ttl.wholeMilliseconds)] }
        _ = try await send(RESPCommand("SET", arguments: arguments))
    }

    /// `DEL keys...`: how many keys were removed.
    @discardableResult
    public func delete(_ keys: [String]) async throws -> Int {
        let reply = try await send(RESPCommand("DEL", arguments: keys.map { .string($0) }))
        guard let count = reply.int else { throw HiredisError.unexpectedReply(expected: "integer", got: reply) }
        return count
    }

    /// `PUBLISH channel message`: how many subscribers received it.
    @discardableResult
    public func publish(_ message: RESPArgument, to channel: String) async throws -> Int {
        let reply = try await send(RESPCommand("PUBLISH", .string(channel), message))
        guard let count = reply.int else { throw HiredisError.unexpectedReply(expected: "integer", got: reply) }
        return count
    }
}
