import NIOCore
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
            #expect(outbox.checkRan(scheduledFor: seconds(11)) == nil)
            // The check for 5 s finds commands still waiting (socket full, say): next, the earliest.
            #expect(outbox.checkRan(scheduledFor: seconds(5)) == seconds(5))
            #expect(outbox.checkRan(scheduledFor: seconds(5)) == seconds(5))
            // Once they are written, the check stops re-arming.
            #expect(outbox.takeBatch()?.commands.count == 11)
            #expect(outbox.checkRan(scheduledFor: seconds(5)) == nil)
            continuation.resume(returning: .null)
        }
        #expect(reply == .null)
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
