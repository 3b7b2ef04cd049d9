import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One TCP connection to Redis.
///
/// Any number of tasks may send on it at once: commands issued while others are in flight are
/// gathered in an outbox and written together on the connection's event loop (automatic
/// pipelining); replies are matched in order. A connection never blocks a thread.
///
/// Most code uses ``HiredisClient``; a connection is handed out directly only for exclusive use
/// (``HiredisClient/withExclusiveConnection(key:_:)``).
public final class HiredisConnection: HiredisClientProtocol {
    private let channel: any Channel
    private let handler: NIOLoopBound<HiredisChannelHandler>
    private let outbox: CommandOutbox
    /// Set once it subscribed: its replies are push messages from then on; never lent again.
    private let subscriberFlag = NIOLockedValueBox(false)
    private var isSubscriber: Bool { subscriberFlag.withLockedValue { $0 } }
    /// Default per-command timeout.
    let commandTimeout: Duration

    private init(channel: any Channel, handler: NIOLoopBound<HiredisChannelHandler>, outbox: CommandOutbox, commandTimeout: Duration) {
        self.channel = channel
        self.handler = handler
        self.commandTimeout = commandTimeout
        self.outbox = outbox
    }

    /// Connects, then authenticates, selects the database, names the client and loads `libraries`
    /// that the server does not have yet, all within `configuration.connectTimeout`.
    ///
    /// The connection runs on `eventLoop`, by default the next one of
    /// ``HiredisConfiguration/eventLoopGroup``.
    ///
    /// - Throws: ``HiredisError/Code/cannotConnect``, or ``HiredisError/server(_:)``
    ///   when the handshake is refused (`WRONGPASS`, `NOAUTH`, ...).
    public static func connect(
        configuration: HiredisConfiguration, libraries: [LuaLibrary] = [], eventLoop: (any EventLoop)? = nil
    ) async throws(HiredisError) -> HiredisConnection {
        try configuration.validate()
        let logger = configuration.logger
        let eventLoop = eventLoop ?? configuration.eventLoopGroup.next()
        let connection: HiredisConnection
        let outbox = CommandOutbox(maximumPending: configuration.maximumPendingCommands)
        let tlsContext = try configuration.tls?.makeContext()
        let health = HiredisChannelHandler.HealthCheck(
            idleInterval: configuration.healthCheckInterval?.timeAmount, timeout: configuration.commandTimeout)
        do {
            var bootstrap = ClientBootstrap(group: eventLoop)
                .connectTimeout(configuration.connectTimeout.timeAmount)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
            if configuration.tcpKeepalive {
                bootstrap = bootstrap.channelOption(.socketOption(.so_keepalive), value: 1)
                    .channelOption(ChannelOptions.tcpKeepaliveIdle, value: 10)
                    .channelOption(ChannelOptions.tcpKeepaliveInterval, value: 5)
                    .channelOption(ChannelOptions.tcpKeepaliveCount, value: 3)
            }
            let host = configuration.host
            let tls = configuration.tls
            let replyLimits = configuration.replyLimits
            let channel =
                try await bootstrap
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tls, let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(tls.makeHandler(context: tlsContext, host: host))
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            HiredisChannelHandler(outbox: outbox, health: health, replyLimits: replyLimits, logger: logger))
                    }
                }
                .connect(host: configuration.host, port: configuration.port)
                .get()
            let handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: HiredisChannelHandler.self), eventLoop: channel.eventLoop)
            }.get()
            connection = HiredisConnection(
                channel: channel, handler: handler, outbox: outbox, commandTimeout: configuration.commandTimeout)
        } catch let error as HiredisError {
            throw error
        } catch {
            throw .cannotConnect(address: configuration.address, reason: "\(error)", underlying: error)
        }

        do {
            try await connection.handshake(configuration, libraries: libraries)
        } catch {
            connection.close()
            if configuration.tls != nil, Self.isTLSFailure(error) {
                throw .tlsFailure(address: configuration.address, underlying: error.underlying ?? error)
            }
            switch error.code {
            case .server: throw error
            case .timedOut: throw .cannotConnect(address: configuration.address, reason: "handshake timed out")
            default: throw .cannotConnect(address: configuration.address, reason: "handshake failed: \(error)")
            }
        }
        logger.debug("connected to Redis", metadata: ["address": "\(configuration.address)"])
        return connection
    }

    /// Whether a handshake failure came from TLS (the NIOSSL handler closes the channel with
    /// its error).
    private static func isTLSFailure(_ error: HiredisError) -> Bool {
        if let underlying = error.underlying, underlying is NIOSSLError || underlying is BoringSSLError { return true }
        return error.message.contains("NIOSSL") || error.message.contains("BoringSSL") || error.message.contains("handshakeFailed")
    }

    private func handshake(_ configuration: HiredisConfiguration, libraries: [LuaLibrary]) async throws(HiredisError) {
        do {
            try await runHandshake(configuration, libraries: libraries)
        } catch let error as HiredisError {
            throw error
        } catch {
            throw HiredisError(
                code: .connectionLost, message: "connection to Redis lost: \(error)", underlying: error, commandMayHaveRun: true)
        }
    }

    private func runHandshake(_ configuration: HiredisConfiguration, libraries: [LuaLibrary]) async throws {
        let commands = Self.handshakeCommands(configuration)
        // Libraries the server has already answer "already exists"; a server without functions
        // (Redis < 7) answers "unknown command": both are left to the first call to report.
        let loads = libraries.map { RESPCommand("FUNCTION", "LOAD", .string($0.source)) }
        let replies = try await pipeline(commands + loads, timeout: configuration.connectTimeout)
        for reply in replies.prefix(commands.count) {
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
        }
    }

    /// Returns the connection to the state its handshake left it in, whatever a borrower did
    /// (`MULTI`/`WATCH`, `SELECT`, another `AUTH` identity, `CLIENT REPLY OFF`, tracking):
    /// `RESET` (Redis 6.2 and later), then the handshake's commands again, in one round trip.
    /// Throws when any of them fails; the caller then closes the connection.
    func reset(_ configuration: HiredisConfiguration) async throws(HiredisError) {
        if isSubscriber { throw .connectionLost(reason: "a subscriber connection cannot be reused", written: false) }
        let commands = [RESPCommand("RESET")] + Self.handshakeCommands(configuration)
        let replies: [RESPReply]
        do {
            replies = try await pipeline(commands, timeout: configuration.commandTimeout)
        } catch let error as HiredisError {
            throw error
        } catch {
            throw .connectionLost(reason: "\(error)")
        }
        guard replies.first == .simpleString("RESET") else { throw .unexpectedReply(expected: "RESET", got: replies.first ?? .null) }
        for reply in replies {
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
        }
    }

    /// AUTH, SELECT, READONLY and CLIENT SETNAME (or PING) as `configuration` asks.
    private static func handshakeCommands(_ configuration: HiredisConfiguration) -> [RESPCommand] {
        var commands: [RESPCommand] = []
        if let password = configuration.password {
            if let username = configuration.username {
                commands.append(RESPCommand("AUTH", .string(username), .string(password)))
            } else {
                commands.append(RESPCommand("AUTH", .string(password)))
            }
        }
        if configuration.database != 0 { commands.append(RESPCommand("SELECT", .integer(configuration.database))) }
        if configuration.isReadOnlyReplica { commands.append(RESPCommand("READONLY")) }
        // Always one command that needs authentication, so a missing password fails here (NOAUTH).
        if let name = configuration.clientName {
            commands.append(RESPCommand("CLIENT", "SETNAME", .string(name)))
        } else {
            commands.append(RESPCommand("PING"))
        }
        return commands
    }

    /// The event loop the connection's I/O runs on.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Whether more than half of ``HiredisConfiguration/maximumPendingCommands`` wait on it.
    var isCrowded: Bool { outbox.isCrowded }

    /// Whether the connection can still take commands.
    public var isOpen: Bool {
        outbox.takesCommands
    }

    /// Completes when the connection has closed, for whatever reason.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Retires the connection: it takes no more commands (they fail unwritten with `error`, which
    /// a cluster or Sentinel client sends again elsewhere) and closes once every command it took
    /// has its reply, or `timeout` after. A node that left a cluster's topology, or a primary
    /// Sentinel demoted, still answers what it was sent (`MOVED`, `READONLY`, the result): closed
    /// at once, those commands would fail as "may have run".
    func retire(refusing error: HiredisError, within timeout: Duration) {
        outbox.refuse(error)
        let handler = self.handler
        let deadline = NIODeadline.now() + timeout.timeAmount
        channel.eventLoop.execute { handler.value.retire(deadline: deadline) }
    }

    /// Closes the connection; commands in flight fail with ``HiredisError/Code/connectionLost``.
    public func close() {
        let handler = self.handler
        channel.eventLoop.execute {
            handler.value.close(error: .connectionLost(reason: "connection closed by the client"))
        }
    }

    // MARK: Commands

    /// Sends one command and returns its reply; an error reply is thrown as ``HiredisError/server(_:)``.
    public func send(_ command: RESPCommand) async throws -> RESPReply {
        try await send(command, timeout: commandTimeout)
    }

    /// Sends one command with its own timeout (for example a blocking pop).
    public func send(_ command: RESPCommand, timeout: Duration) async throws -> RESPReply {
        try await send(command, timeout: timeout, deadline: .now() + timeout.timeAmount)
    }

    /// Sends one command that times out at `deadline` (`timeout` from when its caller started).
    @inline(__always)  // Every async frame on the way to the reply costs an executor check per call.
    func send(_ command: RESPCommand, timeout: Duration, deadline: NIODeadline) async throws -> RESPReply {
        let reply = try await enqueue(deadline: deadline) { (id, deadline, continuation: UnsafeContinuation<RESPReply, any Error>) in
            PendingCommand(id: id, deadline: deadline, timeout: timeout, remaining: 1, collected: [], promise: .single(continuation))
        } encode: { buffer in
            CommandEncoder.encode(command, into: &buffer)
        }
        if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
        return reply
    }

    /// Sends several commands in one write and returns their replies in order. Error replies are
    /// returned as ``RESPReply/error(_:)`` values, not thrown, so that one failing command does not
    /// hide the others' results.
    public func pipeline(_ commands: [RESPCommand]) async throws -> [RESPReply] {
        try await pipeline(commands, timeout: commandTimeout)
    }

    /// Sends several commands in one write with their own timeout.
    public func pipeline(_ commands: [RESPCommand], timeout: Duration) async throws -> [RESPReply] {
        if commands.isEmpty { return [] }
        return try await enqueue(deadline: .now() + timeout.timeAmount) {
            (id, deadline, continuation: UnsafeContinuation<[RESPReply], any Error>) in
            PendingCommand(
                id: id, deadline: deadline, timeout: timeout, remaining: commands.count, collected: [],
                promise: .batch(continuation))
        } encode: { buffer in
            for command in commands { CommandEncoder.encode(command, into: &buffer) }
        }
    }

    /// Writes commands whose replies are not matched to callers (SUBSCRIBE and friends in
    /// subscriber mode, where replies are push messages).
    func sendWithoutReply(_ commands: [RESPCommand]) throws(HiredisError) {
        var bytes = channel.allocator.buffer(capacity: 256)
        for command in commands { CommandEncoder.encode(command, into: &bytes) }
        if let error = outbox.closedError { throw error }
        channel.writeAndFlush(OutboundBatch(bytes: bytes, commands: []), promise: nil)
    }

    /// Routes every reply from now on to `sink`: the connection becomes a subscriber.
    func enterSubscriberMode(_ sink: @escaping @Sendable (RESPReply) -> Void) async {
        subscriberFlag.withLockedValue { $0 = true }
        let handler = self.handler
        try? await channel.eventLoop.submit { handler.value.enterSubscriberMode(sink) }.get()
    }

    /// Puts a command into the outbox and waits for its reply.
    ///
    /// The encoding happens on the caller's thread; the event loop is woken only when the
    /// connection is idle (see ``CommandOutbox``).
    @inline(__always)
    private func enqueue<Reply: Sendable>(
        deadline: NIODeadline,
        makeEntry: (UInt64, NIODeadline, UnsafeContinuation<Reply, any Error>) -> PendingCommand,
        encode: (inout ByteBuffer) -> Void
    ) async throws -> Reply {
        let id = outbox.makeID()
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Reply, any Error>) in
                let entry = makeEntry(id, deadline, continuation)
                switch outbox.append(entry, encode: encode) {
                case .queued: break
                case .wakeEventLoop:
                    let handler = self.handler
                    // A caller already on the loop (its task prefers the loop's executor) writes
                    // at once when it is alone (see ``HiredisChannelHandler/writesAtOnce``).
                    if channel.eventLoop.inEventLoop, handler.value.writesAtOnce {
                        handler.value.flushOutbox()
                    } else {
                        channel.eventLoop.execute { handler.value.flushOutbox() }
                    }
                case .queuedCheckingAt(let deadline):
                    // Normally the next reply flushes the outbox long before this fires.
                    let handler = self.handler
                    channel.eventLoop.scheduleTask(deadline: deadline) { handler.value.checkOutbox(scheduledFor: deadline) }
                case .closed(let error):
                    continuation.resume(
                        throwing: HiredisError(
                            code: error.code, message: error.message, underlying: error.underlying, commandMayHaveRun: false))
                case .overloaded(let count):
                    continuation.resume(throwing: HiredisError.overloaded(pending: count))
                }
            }
        } onCancel: {
            let handler = self.handler
            channel.eventLoop.execute {
                handler.value.abandon(id: id, error: CancellationError())
            }
        }
    }
}
