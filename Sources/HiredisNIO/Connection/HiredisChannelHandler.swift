import Logging
import NIOCore

/// Matches RESP replies to the commands waiting for them, in order; fails them on timeout,
/// on connection loss and on protocol errors.
///
/// In subscriber mode (``enterSubscriberMode(_:)``) every reply is a push message and goes to
/// the sink instead.
final class HiredisChannelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutboundBatch
    typealias OutboundOut = ByteBuffer

    private let reader = ReplyReader()
    private var pending = CircularBuffer<PendingCommand>(initialCapacity: 64)
    private var pushSink: ((RESPReply) -> Void)?
    private var timeoutCheck: (task: Scheduled<Void>, deadline: NIODeadline)?
    private var closedError: HiredisError?
    private var context: ChannelHandlerContext?
    private let logger: Logger
    private let outbox: CommandOutbox

    init(outbox: CommandOutbox, logger: Logger) {
        self.outbox = outbox
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(closedError ?? .connectionLost(reason: "handler removed"))
        self.context = nil
    }

    // MARK: Outbound

    /// Writes whatever callers have queued in the outbox, in one write and one flush.
    func flushOutbox() {
        guard let context, closedError == nil, let batch = outbox.takeBatch() else { return }
        write(batch, context: context)
        context.flush()
    }

    /// Writes bytes whose replies are not awaited (subscriber mode).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        write(unwrapOutboundIn(data), context: context, promise: promise)
    }

    private func write(_ batch: OutboundBatch, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        var batch = batch
        if let closedError {
            for index in batch.commands.indices { batch.commands[index].fail(closedError) }
            promise?.fail(closedError)
            return
        }
        for command in batch.commands {
            pending.append(command)
            scheduleTimeoutCheck(at: command.deadline, context: context)
        }
        context.write(wrapOutboundOut(batch.bytes), promise: promise)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
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
        if let pushSink {
            pushSink(reply)
            return
        }
        guard !pending.isEmpty else {
            throw .protocolError("unsolicited reply \(reply)")
        }
        // Take the entry out to mutate it: through the buffer's subscript, a pipeline's collected
        // replies would be copied on every reply (quadratic in the pipeline's length).
        var head = pending.removeFirst()
        if head.receive(reply) {
            if pending.isEmpty { outbox.markIdle() }
        } else {
            pending.prepend(head)
        }
    }

    /// Commands that gathered while these replies travelled go out together now.
    func channelReadComplete(context: ChannelHandlerContext) {
        flushOutbox()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionLost(reason: "connection closed by peer"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let redisError = error as? HiredisError ?? .connectionLost(reason: "\(error)")
        close(context: context, error: redisError)
    }

    // MARK: Modes and cancellation

    /// From now on every reply goes to `sink` (after SUBSCRIBE/PSUBSCRIBE).
    func enterSubscriberMode(_ sink: @escaping (RESPReply) -> Void) {
        pushSink = sink
    }

    /// Gives up waiting for the command `id`: its caller gets `error`, its reply will be dropped.
    func abandon(id: UInt64, error: any Error) {
        if let index = pending.firstIndex(where: { $0.id == id }) {
            pending[index].fail(error)
        } else {
            outbox.abandon(id: id, error: error)
        }
    }

    /// Fails everything waiting and closes the channel.
    func close(error: HiredisError) {
        guard let context else { return }
        close(context: context, error: error)
    }

    private func close(context: ChannelHandlerContext, error: HiredisError) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: HiredisError) {
        if closedError == nil { closedError = error }
        // First refuse new commands, then resume the waiting callers: a caller that retries at
        // once must not land on this connection again.
        var queued = outbox.close(error)
        timeoutCheck?.task.cancel()
        timeoutCheck = nil
        while var command = pending.popFirst() {
            command.fail(error)
        }
        for index in queued.indices { queued[index].fail(error) }
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
        var next: NIODeadline?
        for index in pending.indices where pending[index].isWaiting {
            if pending[index].deadline <= now {
                pending[index].fail(HiredisError.timedOut(after: pending[index].timeout))
            } else if next == nil || pending[index].deadline < next! {
                next = pending[index].deadline
            }
        }
        if let next { scheduleTimeoutCheck(at: next, context: context) }
        // Commands queued behind a silent server are written now, so that they time out too.
        flushOutbox()
    }
}
