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
            if let closed = state.closedError { return .closed(closed) }
            outstanding.add(1, ordering: .relaxed)
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

    /// The deadline check scheduled for `deadline` ran (after a flush): when commands still wait
    /// here, the deadline to check next (the caller schedules it), else nil.
    func checkRan(scheduledFor deadline: NIODeadline) -> NIODeadline? {
        state.withLockedValue { state in
            // A check scheduled later for an earlier deadline is still pending: it re-arms itself.
            guard state.checkDeadline == deadline else { return nil }
            state.checkDeadline = state.commands.lazy.filter(\.isWaiting).map(\.deadline).min()
            return state.checkDeadline
        }
    }

    /// Fails a queued command's caller; the command is still written and its reply dropped.
    func abandon(id: UInt64, error: any Error) {
        state.withLockedValue { state in
            if let index = state.commands.firstIndex(where: { $0.id == id }) { state.commands[index].fail(error) }
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

    /// Fails queued commands past their deadline (the socket cannot take them): they were
    /// never written.
    func expireQueued(now: NIODeadline) {
        state.withLockedValue { state in
            for index in state.commands.indices where state.commands[index].isWaiting && state.commands[index].deadline <= now {
                state.commands[index].fail(HiredisError.timedOut(after: state.commands[index].timeout, written: false))
            }
        }
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
}
