import NIOCore

/// A command (or an explicit pipeline) written to Redis and waiting for its replies.
///
/// Replies arrive in the order commands were written, so the handler keeps these in a FIFO.
/// When a caller stops waiting (timeout, cancellation) its entry stays in the FIFO without a
/// promise, so that its late reply is consumed and dropped instead of going to the next caller.
struct PendingCommand {
    enum Promise {
        /// One command, one reply.
        case single(UnsafeContinuation<RESPReply, any Error>)
        /// An explicit pipeline: every reply, in order.
        case batch(UnsafeContinuation<[RESPReply], any Error>)
        /// The caller gave up; the replies are still owed by the server and get dropped.
        case abandoned
    }

    let id: UInt64
    let deadline: NIODeadline
    let timeout: Duration
    /// Replies still to come.
    var remaining: Int
    var collected: [RESPReply]
    var promise: Promise
    /// When the handler wrote it (set then).
    var writtenAt = NIODeadline.uptimeNanoseconds(0)
    /// Where its bytes start in the outbox's buffer while it waits there (set by the outbox).
    var byteOffset = 0

    /// Resumes the caller with an error and keeps the entry as a placeholder.
    mutating func fail(_ error: any Error) {
        switch promise {
        case .single(let continuation): continuation.resume(throwing: error)
        case .batch(let continuation): continuation.resume(throwing: error)
        case .abandoned: break
        }
        promise = .abandoned
        collected = []
    }

    /// Takes one reply; returns true when the entry is complete and its caller resumed.
    mutating func receive(_ reply: RESPReply) -> Bool {
        remaining -= 1
        switch promise {
        case .single(let continuation):
            continuation.resume(returning: reply)
            promise = .abandoned
        case .batch(let continuation):
            collected.append(reply)
            if remaining == 0 { continuation.resume(returning: collected) }
        case .abandoned:
            break
        }
        return remaining == 0
    }

    var isWaiting: Bool {
        if case .abandoned = promise { return false }
        return true
    }
}

/// What a connection hands its channel in one write: the bytes of one or more commands and the
/// entries that wait for their replies, in the same order.
struct OutboundBatch {
    var bytes: ByteBuffer
    var commands: [PendingCommand]

    init(bytes: ByteBuffer, commands: [PendingCommand]) {
        self.bytes = bytes
        self.commands = commands
    }

    /// A written batch emptied for reuse as the outbox's storage, or nil when it is too large to
    /// keep around (one large pipeline must not hold its memory for the connection's lifetime).
    /// Its buffer keeps its storage only if the channel is done with it (else clearing copies).
    init?(emptying batch: consuming OutboundBatch) {
        guard batch.bytes.capacity <= 64 * 1024, batch.commands.capacity <= 1024 else { return nil }
        self = consume batch
        bytes.clear()
        commands.removeAll(keepingCapacity: true)
    }
}
