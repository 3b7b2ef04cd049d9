import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Commands that callers have issued and the event loop has not written yet: filled from any
/// thread, emptied on the connection's event loop.
///
/// This is where automatic pipelining happens. While the connection is idle, the first command
/// asks the event loop to write it at once (lowest latency for a lone caller). While replies are
/// outstanding, commands gather here and the handler writes them all together when the next read
/// completes, so the batch size follows the load by itself.
final class CommandOutbox: Sendable {
    enum AppendResult {
        /// The caller must wake the event loop to write.
        case wakeEventLoop
        /// The handler will write it with the next batch.
        case queued
        /// Queued behind replies still owed: the caller must make the event loop check the outbox
        /// at this deadline (``HiredisChannelHandler/checkOutbox(scheduledFor:)``), so that the
        /// command times out even if no reply ever comes.
        case queuedCheckingAt(NIODeadline)
        /// The connection is closed.
        case closed(HiredisError)
        /// Too many commands wait on the connection: this one was not queued.
        case overloaded(Int)
    }

    /// How late the deadline check may come for a command (see ``append(_:encode:)``).
    static let checkSlack = TimeAmount.milliseconds(5)

    private struct State {
        var bytes = ByteBufferAllocator().buffer(capacity: 4096)
        var commands: [PendingCommand] = []
        /// An event-loop task to write the outbox is on its way.
        var wakeScheduled = false
        /// A batch is written and its replies have not all come back.
        var awaitingReplies = false
        /// When the scheduled deadline check of the outbox fires (nil: none is scheduled). One
        /// timer per connection, not one per batch: commands sharing a timeout queue up with
        /// later and later deadlines, which the check already scheduled covers by re-arming.
        var checkDeadline: NIODeadline?
        var closedError: HiredisError?
        /// Set when the connection is retired: new commands are refused with it, what was taken
        /// is still written and answered.
        var refusal: HiredisError?

        /// Fails the queued commands past their deadline at `now` and takes them out, with their
        /// bytes. Returns how many.
        mutating func withdrawOverdue(now: NIODeadline) -> Int {
            withdraw { $0.deadline <= now ? HiredisError.timedOut(after: $0.timeout, written: false) : nil }
        }

        /// Fails the queued commands for which `failure` names an error and takes them out of the
        /// outbox with their bytes, so that they are never written. Returns how many. (A rare
        /// path: timeouts and cancellations before the write. It rebuilds the buffer.)
        mutating func withdraw(_ failure: (PendingCommand) -> (any Error)?) -> Int {
            guard commands.contains(where: { failure($0) != nil }) else { return 0 }
            var keptCommands: [PendingCommand] = []
            var keptBytes = ByteBufferAllocator().buffer(capacity: max(4096, bytes.readableBytes))
            var withdrawn = 0
            for index in commands.indices {
                var command = commands[index]
                if let error = failure(command) {
                    command.fail(error)
                    withdrawn += 1
                    continue
                }
                let end = index + 1 < commands.count ? commands[index + 1].byteOffset : bytes.writerIndex
                var encoded = bytes.getSlice(at: command.byteOffset, length: end - command.byteOffset)!
                command.byteOffset = keptBytes.writerIndex
                keptBytes.writeBuffer(&encoded)
                keptCommands.append(command)
            }
            commands = keptCommands
            bytes = keptBytes
            return withdrawn
        }
    }

    private let state = NIOLockedValueBox(State())
    private let nextID = Atomic<UInt64>(0)
    /// Commands queued here or written and owed a reply.
    private let outstanding = Atomic<Int>(0)
    private let maximumPending: Int

    /// Whether more than half the pending bound is used (the pool then prefers other connections).
    var isCrowded: Bool { outstanding.load(ordering: .relaxed) > maximumPending / 2 }

    init(maximumPending: Int = .max) {
        self.maximumPending = maximumPending
    }

    /// A fresh id for a command, taken before it is appended so that cancellation can name it.
    func makeID() -> UInt64 {
        nextID.add(1, ordering: .relaxed).newValue
    }

    /// Encodes a command into the outbox.
    func append(_ entry: PendingCommand, encode: (inout ByteBuffer) -> Void) -> AppendResult {
        let count = outstanding.load(ordering: .relaxed)
        if count >= maximumPending { return .overloaded(count) }
        return state.withLockedValue { state in
            if let closed = state.closedError ?? state.refusal { return .closed(closed) }
            outstanding.add(1, ordering: .relaxed)
            var entry = entry
            entry.byteOffset = state.bytes.writerIndex
            encode(&state.bytes)
            state.commands.append(entry)
            if state.wakeScheduled { return .queued }
            if state.awaitingReplies {
                // Deadlines reach here slightly out of order (taken before the lock): a check up to
                // `checkSlack` late is fine, a timer per reordering is not.
                if let scheduled = state.checkDeadline, scheduled <= entry.deadline + Self.checkSlack { return .queued }
                state.checkDeadline = entry.deadline
                return .queuedCheckingAt(entry.deadline)
            }
            state.wakeScheduled = true
            return .wakeEventLoop
        }
    }

    /// Takes everything queued, marking the connection busy; nil when nothing is queued.
    func takeBatch() -> OutboundBatch? {
        var none: OutboundBatch?
        return takeBatch(reusing: &none)
    }

    /// Takes everything queued, marking the connection busy; nil when nothing is queued.
    ///
    /// `spare`, an earlier batch emptied after its write, becomes the outbox's storage (taken
    /// out of `spare`), so that a steady flow of batches allocates nothing.
    func takeBatch(reusing spare: inout OutboundBatch?) -> OutboundBatch? {
        state.withLockedValue { state in
            state.wakeScheduled = false
            guard !state.commands.isEmpty else { return nil }
            let batch = OutboundBatch(bytes: state.bytes, commands: state.commands)
            if let reused = spare.take() {
                state.bytes = reused.bytes
                state.commands = reused.commands
            } else {
                state.bytes = ByteBufferAllocator().buffer(capacity: max(4096, batch.bytes.readableBytes))
                state.commands = []
            }
            state.awaitingReplies = true
            return batch
        }
    }

    /// The deadline check scheduled for `deadline` ran at `now`: queued commands past their
    /// deadline fail as timed out and leave the outbox, never written (replies are still owed
    /// ahead of them: a slow script, a blocking command, a frozen server). Returns the deadline to
    /// check next while commands still wait (the caller schedules it), else nil.
    ///
    /// They are not written at their deadline: written then, they would be overdue at once, and
    /// the handler would take the connection for dead although it is only busy; and a command
    /// that timed out "never sent" must never reach Redis afterwards.
    func checkRan(scheduledFor deadline: NIODeadline, now: NIODeadline) -> NIODeadline? {
        state.withLockedValue { state in
            // A check scheduled later for an earlier deadline is still pending: it re-arms itself.
            guard state.checkDeadline == deadline else { return nil }
            outstanding.subtract(state.withdrawOverdue(now: now), ordering: .relaxed)
            state.checkDeadline = state.commands.lazy.map(\.deadline).min()
            return state.checkDeadline
        }
    }

    /// The socket cannot take the queued commands now (its buffer is full): those past their
    /// deadline fail as timed out and leave the outbox, never written; the rest wait for the
    /// socket. Returns a deadline at which the caller must check the outbox
    /// (``checkRan(scheduledFor:now:)``) when none already covers the earliest of them.
    func writeBlocked(now: NIODeadline) -> NIODeadline? {
        state.withLockedValue { state in
            // No wake is on its way any more: commands appended from now on ask for their own.
            state.wakeScheduled = false
            outstanding.subtract(state.withdrawOverdue(now: now), ordering: .relaxed)
            guard let earliest = state.commands.lazy.map(\.deadline).min() else { return nil }
            if let scheduled = state.checkDeadline, scheduled <= earliest + Self.checkSlack { return nil }
            state.checkDeadline = earliest
            return earliest
        }
    }

    /// Fails a queued command's caller and takes it out of the outbox: it is never written.
    /// Returns false when it is not queued here (already written, or unknown).
    @discardableResult
    func abandon(id: UInt64, error: any Error) -> Bool {
        state.withLockedValue { state in
            let withdrawn = state.withdraw { $0.id == id ? error : nil }
            outstanding.subtract(withdrawn, ordering: .relaxed)
            return withdrawn > 0
        }
    }

    /// Commands the handler adds by itself (health-check PINGs).
    func added(_ count: Int) {
        outstanding.add(count, ordering: .relaxed)
    }

    /// Commands whose replies all arrived.
    func completed(_ count: Int) {
        outstanding.subtract(count, ordering: .relaxed)
    }

    /// Every written command has its reply: the next command may be written at once.
    func markIdle() {
        state.withLockedValue { $0.awaitingReplies = false }
    }

    /// Refuses further commands; returns those still queued so that they can be failed.
    func close(_ error: HiredisError) -> [PendingCommand] {
        state.withLockedValue { state in
            if state.closedError == nil { state.closedError = error }
            outstanding.store(0, ordering: .relaxed)
            defer { state.commands = [] }
            return state.commands
        }
    }

    var closedError: HiredisError? { state.withLockedValue { $0.closedError } }

    /// Refuses further commands with `error` (they fail unwritten); those taken already are
    /// written and answered as usual.
    func refuse(_ error: HiredisError) {
        state.withLockedValue { state in
            if state.refusal == nil { state.refusal = error }
        }
    }

    /// Whether it takes commands: neither closed nor refusing.
    var takesCommands: Bool { state.withLockedValue { $0.closedError == nil && $0.refusal == nil } }

    /// Whether no command is queued or owed a reply.
    var isSettled: Bool { outstanding.load(ordering: .relaxed) == 0 }
}
