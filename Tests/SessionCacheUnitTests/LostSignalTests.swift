import NIOPosix
import Synchronization
import Testing

@testable import SessionCache

@Suite("LostSignal: a hook raced against a lost claim and a timeout")
struct LostSignalTests {
    let eventLoop = MultiThreadedEventLoopGroup.singleton.any()

    @Test func workThatFinishesGivesItsResult() async {
        let signal = LostSignal()
        let outcome = await signal.race(timeout: .seconds(30), on: eventLoop) { 42 }
        guard case .finished(.success(42)) = outcome else {
            Issue.record("expected the work's value, got \(outcome)")
            return
        }
    }

    @Test func workPastItsTimeoutIsCancelledAndWaitedFor() async {
        let ended = Atomic(false)
        let outcome = await LostSignal().race(timeout: .milliseconds(50), on: eventLoop) {
            defer { ended.store(true, ordering: .relaxed) }
            try await Task.sleep(for: .seconds(60))
        }
        guard case .timedOut = outcome else {
            Issue.record("expected a timeout, got \(outcome)")
            return
        }
        let endedFirst = ended.load(ordering: .relaxed)
        #expect(endedFirst, "the race returns only once the work has ended")
    }

    @Test func firingCancelsEveryRaceAndLaterRacesDoNotStart() async throws {
        let signal = LostSignal()
        let started = AsyncStream.makeStream(of: Void.self)
        async let first = signal.race(timeout: .seconds(60), on: eventLoop) {
            started.continuation.yield()
            try await Task.sleep(for: .seconds(60))
        }
        var iterator = started.stream.makeAsyncIterator()
        await iterator.next()
        signal.fire()
        guard case .lost = await first else {
            Issue.record("expected the race to be lost")
            return
        }
        let ran = Atomic(false)
        let later = await signal.race(timeout: .seconds(60), on: eventLoop) { ran.store(true, ordering: .relaxed) }
        guard case .lost = later else {
            Issue.record("expected a race after the signal fired to be lost, got \(later)")
            return
        }
        let workRan = ran.load(ordering: .relaxed)
        #expect(signal.isLost && !workRan, "work is not started once the signal fired")
    }

    @Test func cancellingTheCallerCancelsTheWork() async {
        let signal = LostSignal()
        let caller = Task {
            await signal.race(timeout: .seconds(60), on: eventLoop) { try await Task.sleep(for: .seconds(60)) }
        }
        caller.cancel()
        guard case .finished(.failure(let error)) = await caller.value else {
            Issue.record("expected the work to end with its cancellation")
            return
        }
        #expect(error is CancellationError)
    }
}
