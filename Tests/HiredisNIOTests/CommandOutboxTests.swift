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
