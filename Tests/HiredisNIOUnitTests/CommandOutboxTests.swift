import NIOCore
import TestSupport
import Testing

@testable import HiredisNIO

@Suite("Command outbox (automatic pipelining)")
struct CommandOutboxTests {
    /// An entry with a live promise, due at `deadline`. The entries share one continuation: the
    /// outbox must not resume any of them here (it only fails entries on close or expiry).
    private func entry(
        _ outbox: CommandOutbox, deadline: NIODeadline, _ continuation: UnsafeContinuation<RESPReply, any Error>
    ) -> PendingCommand {
        PendingCommand(
            id: outbox.makeID(), deadline: deadline, timeout: .seconds(1), remaining: 1, collected: [], promise: .single(continuation))
    }

    /// Commands that queue behind replies still owed need a deadline check, but one timer per
    /// connection, not one per batch: under load, a batch goes out every few microseconds and each
    /// timer would live for the whole command timeout in the event loop's timer heap.
    @Test func queuedCommandsShareOneDeadlineCheckThatReArmsItself() async throws {
        let outbox = CommandOutbox()
        let base = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let seconds = { (count: Int64) in base + .seconds(count) }
        let reply = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
            // Idle: the first command wakes the loop, and is written.
            #expect(isWake(outbox.append(entry(outbox, deadline: seconds(10), continuation)) { _ in }))
            #expect(outbox.takeBatch()?.commands.count == 1)
            // Behind owed replies: the first queued command asks for a check at its deadline.
            #expect(checkAt(outbox.append(entry(outbox, deadline: seconds(11), continuation)) { _ in }) == seconds(11))
            #expect(outbox.takeBatch()?.commands.count == 1)
            // The next batches' commands (later deadlines) rely on that check: no new timer.
            for later in 12...20 {
                #expect(isQueued(outbox.append(entry(outbox, deadline: seconds(Int64(later)), continuation)) { _ in }))
            }
            // Deadlines a little out of order (read before the outbox's lock) share it too.
            #expect(isQueued(outbox.append(entry(outbox, deadline: seconds(11) - .milliseconds(2), continuation)) { _ in }))
            // A command with a shorter timeout (an earlier deadline) gets a check of its own.
            #expect(checkAt(outbox.append(entry(outbox, deadline: seconds(5), continuation)) { _ in }) == seconds(5))
            // The check for 11 s was superseded: running it schedules nothing more.
            #expect(outbox.checkRan(scheduledFor: seconds(11), now: base) == nil)
            // The check for 5 s finds commands still waiting (socket full, say): next, the earliest.
            #expect(outbox.checkRan(scheduledFor: seconds(5), now: base) == seconds(5))
            #expect(outbox.checkRan(scheduledFor: seconds(5), now: base) == seconds(5))
            // Once they are written, the check stops re-arming.
            #expect(outbox.takeBatch()?.commands.count == 11)
            #expect(outbox.checkRan(scheduledFor: seconds(5), now: base) == nil)
            continuation.resume(returning: .null)
        }
        #expect(reply == .null)
    }

    /// A command that waits for its write (replies still owed ahead of it) and reaches its deadline
    /// fails as "never sent" and leaves the outbox with its bytes. Written at its deadline it would
    /// be overdue at once, and the handler would take a busy connection (a blocking command, a slow
    /// script) for a dead one; and a command whose caller was told it never ran must not run.
    @Test func overdueQueuedCommandsLeaveTheOutboxUnwritten() async throws {
        let outbox = CommandOutbox(maximumPending: 3)
        let base = NIODeadline.uptimeNanoseconds(1_000_000_000)
        _ = outbox.append(placeholder(outbox, deadline: base + .seconds(10))) { $0.writeString("first ") }
        #expect(outbox.takeBatch()?.commands.count == 1)  // written: its reply is owed
        let error = await expectRedisError {
            _ = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
                let early = PendingCommand(
                    id: outbox.makeID(), deadline: base + .seconds(2), timeout: .seconds(2), remaining: 1, collected: [],
                    promise: .single(continuation))
                #expect(checkAt(outbox.append(early) { $0.writeString("early ") }) == base + .seconds(2))
                #expect(isQueued(outbox.append(placeholder(outbox, deadline: base + .seconds(5))) { $0.writeString("late") }))
                #expect(isOverloaded(outbox.append(placeholder(outbox, deadline: base + .seconds(5))) { _ in }))
                // Its check: it fails, and the next check is for the command still waiting.
                #expect(outbox.checkRan(scheduledFor: base + .seconds(2), now: base + .seconds(2)) == base + .seconds(5))
            }
        }
        #expect(error?.code == .timedOut && error?.commandMayHaveRun == false)
        // It no longer counts against the bound, and its bytes are gone from the next batch.
        #expect(isQueued(outbox.append(placeholder(outbox, deadline: base + .seconds(6))) { $0.writeString(" next") }))
        let batch = outbox.takeBatch()
        #expect(batch.map { String(buffer: $0.bytes) } == "late next")
        #expect(batch?.commands.count == 2)
    }

    /// A cancelled command still in the outbox leaves it: it is never written.
    @Test func aCancelledQueuedCommandIsNeverWritten() async throws {
        let outbox = CommandOutbox()
        let deadline = NIODeadline.now() + .seconds(10)
        _ = outbox.append(placeholder(outbox, deadline: deadline)) { $0.writeString("first ") }
        let id = outbox.makeID()
        let entry = PendingCommand(id: id, deadline: deadline, timeout: .seconds(10), remaining: 1, collected: [], promise: .abandoned)
        _ = outbox.append(entry) { $0.writeString("cancelled ") }
        _ = outbox.append(placeholder(outbox, deadline: deadline)) { $0.writeString("last") }
        #expect(outbox.abandon(id: id, error: CancellationError()))
        #expect(!outbox.abandon(id: id, error: CancellationError()))
        #expect(outbox.takeBatch().map { String(buffer: $0.bytes) } == "first last")
    }

    /// While the socket cannot take more, queued commands still time out at their own deadlines:
    /// the blocked write leaves no "wake on its way" flag behind that would spare later commands
    /// their check.
    @Test func aFullSocketLeavesEveryQueuedCommandItsDeadlineCheck() {
        let outbox = CommandOutbox()
        let base = NIODeadline.uptimeNanoseconds(1_000_000_000)
        #expect(isWake(outbox.append(placeholder(outbox, deadline: base + .seconds(10))) { $0.writeString("patient") }))
        // The loop finds the socket full: nothing is written; the command gets a check at its deadline.
        #expect(outbox.writeBlocked(now: base) == base + .seconds(10))
        // A later command with a shorter timeout wakes the loop again and gets a check of its own.
        #expect(isWake(outbox.append(placeholder(outbox, deadline: base + .seconds(3))) { $0.writeString(" hasty") }))
        #expect(outbox.writeBlocked(now: base) == base + .seconds(3))
        // At 3 s it fails unwritten; the check re-arms for the other.
        #expect(outbox.checkRan(scheduledFor: base + .seconds(3), now: base + .seconds(3)) == base + .seconds(10))
        #expect(outbox.takeBatch().map { String(buffer: $0.bytes) } == "patient")
    }

    /// A written batch, emptied, is the storage of the next one: a steady flow of single
    /// commands allocates no buffer per write. A buffer the channel still holds (a partial write)
    /// is never written into, and one large pipeline's buffer is not kept.
    @Test func writtenBatchesLendTheirStorageToTheNextAndNeverItsBytes() async throws {
        let outbox = CommandOutbox()
        let deadline = NIODeadline.now() + .seconds(10)
        let reply = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("first") }
            guard let first = outbox.takeBatch() else {
                Issue.record("nothing taken")
                return continuation.resume(returning: .null)
            }
            let storage = first.bytes.withVeryUnsafeBytes { $0.baseAddress }
            var spare = OutboundBatch(emptying: consume first)
            #expect(spare?.bytes.readableBytes == 0 && spare?.commands.isEmpty == true)

            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("second") }
            var second = outbox.takeBatch(reusing: &spare)
            #expect(spare == nil)
            // Nothing was queued between: the outbox had the fresh buffer the first take made.
            #expect(second.map { String(buffer: $0.bytes) } == "second")

            let secondStorage = second?.bytes.withVeryUnsafeBytes { $0.baseAddress }
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("third") }
            var reused: OutboundBatch?
            if let written = second.take() { reused = OutboundBatch(emptying: consume written) }
            let third = outbox.takeBatch(reusing: &reused)
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("fourth") }
            let fourth = outbox.takeBatch()
            // Each went into an earlier batch's storage, from its start.
            #expect(third.map { String(buffer: $0.bytes) } == "third")
            #expect(third?.bytes.withVeryUnsafeBytes { $0.baseAddress } == storage)
            #expect(fourth.map { String(buffer: $0.bytes) } == "fourth")
            #expect(fourth?.bytes.withVeryUnsafeBytes { $0.baseAddress } == secondStorage)

            // Still held elsewhere (the channel has not written it all): emptying copies, and the
            // holder's bytes stay as they were.
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("held") }
            let held = outbox.takeBatch()!
            let channelCopy = held.bytes
            var heldSpare = OutboundBatch(emptying: held)
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("other") }
            _ = outbox.takeBatch(reusing: &heldSpare)
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeString("overwrite") }
            _ = outbox.takeBatch()
            #expect(String(buffer: channelCopy) == "held")

            // A large pipeline's buffer is let go.
            _ = outbox.append(entry(outbox, deadline: deadline, continuation)) { $0.writeRepeatingByte(0, count: 100_000) }
            #expect(outbox.takeBatch().flatMap { OutboundBatch(emptying: $0) } == nil)
            continuation.resume(returning: .null)
        }
        #expect(reply == .null)
    }

    /// An entry whose caller already stopped waiting (nothing to resume).
    private func placeholder(_ outbox: CommandOutbox, deadline: NIODeadline) -> PendingCommand {
        PendingCommand(id: outbox.makeID(), deadline: deadline, timeout: .seconds(1), remaining: 1, collected: [], promise: .abandoned)
    }

    private func isOverloaded(_ result: CommandOutbox.AppendResult) -> Bool {
        if case .overloaded = result { return true }
        return false
    }

    private func isWake(_ result: CommandOutbox.AppendResult) -> Bool {
        if case .wakeEventLoop = result { return true }
        return false
    }

    private func isQueued(_ result: CommandOutbox.AppendResult) -> Bool {
        if case .queued = result { return true }
        return false
    }

    private func checkAt(_ result: CommandOutbox.AppendResult) -> NIODeadline? {
        if case .queuedCheckingAt(let deadline) = result { return deadline }
        return nil
    }
}
