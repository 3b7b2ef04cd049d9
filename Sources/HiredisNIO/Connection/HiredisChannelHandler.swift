import Logging
import NIOCore

/// Matches RESP replies to the commands waiting for them, in order; fails them on timeout,
/// on connection loss and on protocol errors.
///
/// In subscriber mode (``enterSubscriberMode(_:)``) every reply is a push message and goes to
/// the sink instead.
///
/// It also watches the connection's health. A connection that has been idle for the health-check
/// interval sends a `PING`. Whenever something owed by the server (a command, a PING) passes its
/// deadline while not one byte arrived since it was written, the connection is presumed dead
/// (the network dropped it without a reset, or the server froze) and is closed, failing what
/// waits on it, so that the pool replaces it instead of queueing behind it for the kernel's
/// 15 minutes.
final class HiredisChannelHandler: ChannelDuplexHandler {
    /// The health check's settings.
    struct HealthCheck {
        /// Idle time after which a PING is sent; nil: never.
        var idleInterval: TimeAmount?
        /// How long the PING may take.
        var timeout: Duration
    }

    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutboundBatch
    typealias OutboundOut = ByteBuffer

    private let reader: ReplyReader
    private var pending = CircularBuffer<PendingCommand>(initialCapacity: 64)
    /// The last written batch, emptied: the outbox's storage for the next one.
    private var spareBatch: OutboundBatch?
    /// Initialized, active, subscribed, closing, closed: the one place the connection's mode and
    /// the error that ended it live.
    private var connection = ConnectionStateMachine<(RESPReply) -> Void>()
    private var timeoutCheck: (task: Scheduled<Void>, deadline: NIODeadline)?
    private var context: ChannelHandlerContext?
    private let logger: Logger
    private let outbox: CommandOutbox
    private let health: HealthCheck
    /// When the last bytes arrived.
    private var lastRead = NIODeadline.now()
    /// When the connection last did anything (read or write): the idle clock.
    private var lastActivity = NIODeadline.now()
    private var idleCheck: Scheduled<Void>?
    /// Commands (or pipelines) completed by the read in progress, and by the last completed read:
    /// how many callers a read resumed.
    /// Set by ``retire(deadline:)``: the connection closes when the last reply owed arrives.
    private var retiring = false
    private var completedInRead = 0
    private var completedInLastRead = 0

    /// Whether a caller on this loop that finds the connection idle should write its command at
    /// once rather than through the loop's task queue. After a read that resumed several callers,
    /// no: their next commands follow within the same loop turn and go out together after them
    /// (written at once, the first went alone and the others waited a round trip for its reply:
    /// 10-15% less throughput with 200 callers). After a read that resumed one, yes: the trip
    /// through the task queue is a few percent of a lone caller's round trip.
    var writesAtOnce: Bool { completedInLastRead <= 1 }

    init(
        outbox: CommandOutbox, health: HealthCheck = HealthCheck(idleInterval: nil, timeout: .seconds(5)),
        replyLimits: ReplyLimits = ReplyLimits(), logger: Logger
    ) {
        self.reader = ReplyReader(limits: replyLimits)
        self.outbox = outbox
        self.health = health
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive, connection.channelActive() { scheduleIdleCheck(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if connection.channelActive() { scheduleIdleCheck(context: context) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        perform(connection.channelClosed(.connectionLost(reason: "handler removed")), context: context)
        self.context = nil
    }

    // MARK: Outbound

    /// Writes whatever callers have queued in the outbox, in one write and one flush.
    func flushOutbox() {
        guard let context, connection.isOpen else { return }
        // While the socket's buffer is full, commands wait in the outbox (bounded by
        // maximumPendingCommands); the ones past their deadline fail there, unsent.
        guard context.channel.isWritable else {
            if let deadline = outbox.writeBlocked(now: .now()) { scheduleOutboxCheck(at: deadline, context: context) }
            return
        }
        guard let batch = outbox.takeBatch(reusing: &spareBatch) else { return }
        write(batch, context: context)
        context.flush()
        spareBatch = OutboundBatch(emptying: consume batch)
    }

    /// The outbox's deadline check (see ``CommandOutbox/AppendResult/queuedCheckingAt(_:)``):
    /// fails what waits there past its deadline (unwritten: replies are still owed ahead of it, or
    /// the socket is full), and schedules the next check while commands still wait. The next
    /// reply, or the socket's room, writes the others.
    func checkOutbox(scheduledFor deadline: NIODeadline) {
        guard let context, connection.isOpen, let next = outbox.checkRan(scheduledFor: deadline, now: .now()) else { return }
        scheduleOutboxCheck(at: next, context: context)
    }

    private func scheduleOutboxCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        context.eventLoop.assumeIsolated().scheduleTask(deadline: max(deadline, .now())) { [self] in
            self.checkOutbox(scheduledFor: deadline)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flushOutbox() }
        context.fireChannelWritabilityChanged()
    }

    /// Writes bytes whose replies are not awaited (subscriber mode).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        write(unwrapOutboundIn(data), context: context, promise: promise)
    }

    private func write(_ batch: OutboundBatch, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        var batch = batch
        if let closedError = connection.closedError {
            for index in batch.commands.indices { batch.commands[index].fail(closedError) }
            promise?.fail(closedError)
            return
        }
        let now = NIODeadline.now()
        lastActivity = now
        for var command in batch.commands {
            command.writtenAt = now
            pending.append(command)
            scheduleTimeoutCheck(at: command.deadline, context: context)
        }
        context.write(wrapOutboundOut(batch.bytes), promise: promise)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        lastRead = .now()
        lastActivity = lastRead
        do {
            try reader.feed(buffer)
            while let reply = try reader.next() {
                try deliver(reply)
            }
        } catch {
            logger.warning("dropping Redis connection", metadata: ["error": "\(error)"])
            close(context: context, error: error)
        }
    }

    private func deliver(_ reply: RESPReply) throws(HiredisError) {
        if let pushSink = connection.pushSink {
            pushSink(reply)
            return
        }
        guard !pending.isEmpty else {
            throw .protocolError("unsolicited reply (\(reply.shape))")
        }
        // Take the entry out to mutate it: through the buffer's subscript, a pipeline's collected
        // replies would be copied on every reply (quadratic in the pipeline's length).
        var head = pending.removeFirst()
        if head.receive(reply) {
            completedInRead += 1
            outbox.completed(1)
            if pending.isEmpty {
                outbox.markIdle()
                if retiring { closeIfSettled() }
            }
        } else {
            pending.prepend(head)
        }
    }

    /// Commands that gathered while these replies travelled go out together now.
    func channelReadComplete(context: ChannelHandlerContext) {
        completedInLastRead = completedInRead
        completedInRead = 0
        flushOutbox()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(connection.channelClosed(.connectionLost(reason: "connection closed by peer")), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let redisError = error as? HiredisError ?? .connectionLost(reason: "\(error)")
        close(context: context, error: redisError)
    }

    // MARK: Modes and cancellation

    /// From now on every reply goes to `sink` (after SUBSCRIBE/PSUBSCRIBE).
    func enterSubscriberMode(_ sink: @escaping (RESPReply) -> Void) {
        _ = connection.enterSubscriberMode(sink)
    }

    /// Gives up waiting for the command `id`: its caller gets `error`, its reply will be dropped.
    func abandon(id: UInt64, error: any Error) {
        // Still in the outbox: it leaves it and is never written. Else it is written: its reply is
        // owed and will be dropped.
        if outbox.abandon(id: id, error: error) { return }
        if let index = pending.firstIndex(where: { $0.id == id }) { pending[index].fail(error) }
    }

    /// Closes once every command taken has its reply (see ``HiredisConnection/retire(refusing:within:)``),
    /// or at `deadline`: what still waits then fails as the connection lost.
    func retire(deadline: NIODeadline) {
        guard let context, connection.isOpen, !retiring else { return }
        retiring = true
        // Commands queued before the refusal go out now; their replies are awaited like the rest.
        flushOutbox()
        closeIfSettled()
        context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            guard let context = self.context else { return }
            self.close(context: context, error: .connectionLost(reason: "the retired connection still waited for replies"))
        }
    }

    private func closeIfSettled() {
        guard let context, pending.isEmpty, outbox.isSettled else { return }
        close(context: context, error: .connectionLost(reason: "connection retired", written: false))
    }

    /// Fails everything waiting and closes the channel.
    func close(error: HiredisError) {
        guard let context else { return }
        close(context: context, error: error)
    }

    /// Fails everything waiting (as timed out those past their deadline at `timedOutAt`) and
    /// closes the channel.
    private func close(context: ChannelHandlerContext, error: HiredisError, timedOutAt: NIODeadline? = nil) {
        perform(connection.close(error), context: context, timedOutAt: timedOutAt)
    }

    private func perform(
        _ action: ConnectionStateMachine<(RESPReply) -> Void>.CloseAction, context: ChannelHandlerContext, timedOutAt: NIODeadline? = nil
    ) {
        switch action {
        case .failAllAndCloseChannel(let error):
            failAll(error, timedOutAt: timedOutAt)
            context.close(promise: nil)
        case .failAll(let error):
            failAll(error, timedOutAt: timedOutAt)
        case .none:
            break
        }
    }

    /// Fails everything waiting with `error`, except commands past their deadline at
    /// `timedOutAt`, which fail as timed out.
    private func failAll(_ error: HiredisError, timedOutAt: NIODeadline? = nil) {
        // First refuse new commands, then resume the waiting callers: a caller that retries at
        // once must not land on this connection again.
        var queued = outbox.close(error)
        timeoutCheck?.task.cancel()
        timeoutCheck = nil
        idleCheck?.cancel()
        idleCheck = nil
        while var command = pending.popFirst() {
            if let timedOutAt, command.deadline <= timedOutAt {
                command.fail(HiredisError.timedOut(after: command.timeout))
            } else {
                command.fail(error)
            }
        }
        // What was never written certainly did not run.
        let unwritten = HiredisError(
            code: error.code, message: error.message, serverError: error.serverError, underlying: error.underlying,
            commandMayHaveRun: false)
        for index in queued.indices { queued[index].fail(unwritten) }
    }

    // MARK: Timeouts

    /// One timer per connection, set for the earliest deadline among waiting commands; it does not
    /// need cancelling when replies arrive (firing with nothing due is cheap).
    private func scheduleTimeoutCheck(at deadline: NIODeadline, context: ChannelHandlerContext) {
        if let timeoutCheck, timeoutCheck.deadline <= deadline { return }
        timeoutCheck?.task.cancel()
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            self.timeoutCheck = nil
            self.expireOverdue(context: context)
        }
        timeoutCheck = (task, deadline)
    }

    private func expireOverdue(context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        // Owed past its deadline and not one byte since it was written: nobody is there.
        var silentSince: NIODeadline?
        for command in pending where command.deadline <= now && command.writtenAt >= lastRead {
            silentSince = min(silentSince ?? command.writtenAt, command.writtenAt)
        }
        if let silentSince {
            let silence = Duration.nanoseconds(Int64(now.uptimeNanoseconds &- silentSince.uptimeNanoseconds))
            logger.warning("Redis connection presumed dead: no reply", metadata: ["silent_for": "\(silence)"])
            // The connection refuses new commands before any caller resumes: a caller told "timed
            // out" that retries at once must not land on it again.
            close(
                context: context, error: .connectionLost(reason: "no reply for \(silence); the connection was presumed dead and closed"),
                timedOutAt: now)
            return
        }
        // The reply owed next is overdue although bytes arrive: a server trickling a reply (a byte
        // now and then keeps the rule above from firing) holds every command behind it. Replies
        // come in order, so nothing behind it can be answered before it: the connection is
        // closed, as one that went silent.
        if let head = pending.first, head.deadline <= now {
            logger.warning("Redis connection closed: the reply owed next is overdue while bytes still arrive")
            close(
                context: context, error: .connectionLost(reason: "the reply owed next was overdue; the connection was closed"),
                timedOutAt: now)
            return
        }
        var next: NIODeadline?
        for index in pending.indices {
            if pending[index].deadline <= now {
                if pending[index].isWaiting { pending[index].fail(HiredisError.timedOut(after: pending[index].timeout)) }
            } else if pending[index].isWaiting, next == nil || pending[index].deadline < next! {
                next = pending[index].deadline
            }
        }
        if let next { scheduleTimeoutCheck(at: next, context: context) }
        // Commands queued in the outbox behind these stay there: they fail at their own deadline
        // unwritten (``checkOutbox(scheduledFor:)``), or go out with the next reply.
    }

    // MARK: Health check

    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        guard let interval = health.idleInterval, idleCheck == nil, connection.isOpen else { return }
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: lastActivity + interval) { [self] in
            self.idleCheck = nil
            self.checkIdle(context: context)
        }
    }

    /// Sends a PING on a connection idle for the interval; its reply (or the lack of one within
    /// the health-check timeout) is judged like any command's.
    private func checkIdle(context: ChannelHandlerContext) {
        guard let interval = health.idleInterval, connection.isOpen else { return }
        let now = NIODeadline.now()
        if connection.pushSink == nil, pending.isEmpty, now - lastActivity >= interval {
            var bytes = context.channel.allocator.buffer(capacity: 14)
            bytes.writeString("*1\r\n$4\r\nPING\r\n")
            let ping = PendingCommand(
                id: 0, deadline: now + health.timeout.timeAmount, timeout: health.timeout, remaining: 1, collected: [],
                promise: .abandoned)
            outbox.added(1)
            write(OutboundBatch(bytes: bytes, commands: [ping]), context: context)
            context.flush()
        } else if connection.pushSink != nil, now - lastActivity >= interval {
            // A subscriber's PING is answered with a push message (which the sink ignores); if
            // no byte at all arrives before the deadline, the connection is dead.
            var bytes = context.channel.allocator.buffer(capacity: 14)
            bytes.writeString("*1\r\n$4\r\nPING\r\n")
            lastActivity = now
            context.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
            context.eventLoop.assumeIsolated().scheduleTask(deadline: now + health.timeout.timeAmount) { [self] in
                guard self.lastRead < now, self.connection.isOpen else { return }
                self.close(
                    context: context, error: .connectionLost(reason: "no reply to PING; the connection was presumed dead and closed"))
            }
        }
        scheduleIdleCheck(context: context)
    }
}
