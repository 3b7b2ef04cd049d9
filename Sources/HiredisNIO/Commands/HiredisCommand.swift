/// A Redis command with a typed response: what it sends and what its reply decodes to, in one
/// place.
///
/// ```swift
/// let now = try await client.execute(TIME())          // RedisTime
/// let (set, time) = try await client.execute(SET("k", "v"), TIME())   // one round trip
/// ```
///
/// The command's key (the first one decides its Redis Cluster slot) and whether it only reads are
/// those of its ``RESPCommand`` (``RESPCommand/slot``, ``RESPCommand/isReadOnly``). A
/// ``RESPCommand`` is itself a command whose response is the raw ``RESPReply``.
public protocol HiredisCommand: Sendable {
    /// What the reply decodes to.
    associatedtype Response: Sendable

    /// The command as sent.
    var command: RESPCommand { get }

    /// The function library the command calls (`FCALL`), loaded again when a server lost it
    /// (a restart without persistence, `FUNCTION FLUSH`, a new primary); nil for other commands.
    var library: LuaLibrary? { get }

    /// The reply as a Swift value. Error replies never get here: they are thrown as
    /// ``HiredisError/server(_:)``.
    func decode(_ reply: RESPReply) throws -> Response
}

extension HiredisCommand {
    @inlinable
    public var library: LuaLibrary? { nil }
}

extension RESPCommand: HiredisCommand {
    public var command: RESPCommand { self }
    public func decode(_ reply: RESPReply) -> RESPReply { reply }
}

extension HiredisClientProtocol {
    /// Sends one command and decodes its reply.
    ///
    /// - Throws: ``HiredisError`` when Redis fails or answers with an error; what `decode` throws
    ///   when the reply is not what the command answers.
    @inlinable
    public func execute<Command: HiredisCommand>(_ command: Command) async throws -> Command.Response {
        try await executeOne(command)
    }

    // Inlinable, as the methods below: specialized in the caller's module for its command types
    // (a generic call into this module costs each command noticeably more CPU).
    @inlinable
    package func executeOne<Command: HiredisCommand>(_ command: Command) async throws -> Command.Response {
        let raw = command.command
        guard let library = command.library else { return try command.decode(try await send(raw)) }
        return try command.decode(try await call(raw, loading: library))
    }
}

extension HiredisClient {
    /// Sends one command and decodes its reply (the pipeline form below, given one command, would
    /// answer a `Result`).
    ///
    /// - Throws: ``HiredisError`` when Redis fails or answers with an error; what `decode` throws
    ///   when the reply is not what the command answers.
    @inlinable
    public func execute<Command: HiredisCommand>(_ command: Command) async throws -> Command.Response {
        try await executeOne(command)
    }

    /// Sends one command to the primary at `address` (as ``primaries()`` lists it) and decodes its
    /// reply: for node-local settings such as `CONFIG`.
    @inlinable
    public func execute<Command: HiredisCommand>(_ command: Command, toPrimary address: String) async throws -> Command.Response {
        try command.decode(try await send(command.command, toPrimary: address))
    }

    /// Sends several commands in one pipeline (one round trip; split by node on a cluster) and
    /// decodes each reply: an error reply or a reply that does not decode is that command's
    /// failure, the others still succeed. `timeout` bounds the whole pipeline (default: the
    /// configuration's command timeout); a command that blocks, such as `WAIT`, needs its own
    /// time added.
    ///
    /// - Throws: ``HiredisError`` when the pipeline fails as a whole (connection lost, timed out).
    @inlinable
    public func execute<each Command: HiredisCommand>(
        _ commands: repeat each Command, timeout: Duration? = nil
    ) async throws -> (repeat Result<(each Command).Response, any Error>) {
        var raw: [RESPCommand] = []
        var library: LuaLibrary?
        for command in repeat each commands {
            raw.append(command.command)
            library = library ?? command.library
        }
        let replies = try await pipeline(raw, loading: library, timeout: timeout ?? configuration.commandTimeout)
        var index = 0
        func decodeNext<One: HiredisCommand>(_ command: One) -> Result<One.Response, any Error> {
            defer { index += 1 }
            if case .error(let text) = replies[index] { return .failure(HiredisError.server(HiredisServerError(reply: text))) }
            return Result { try command.decode(replies[index]) }
        }
        return (repeat decodeNext(each commands))
    }
}
