import Synchronization
import Testing

@testable import SessionCache

@Suite("LostSignal: a hook raced against a lost claim and a timeout")
struct LostSignalTests {
    /// Nobody runs this one: only the timeout test needs its deadlines watched, and runs its own.
    let deadlines = HookDeadlines(resolution: .milliseconds(5))

    @Test func workThatFinishesGivesItsResult() async {
        let signal = LostSignal()
        let outcome = await signal.race(timeout: .seconds(30), stopGrace: .seconds(60), deadlines: deadlines) { 42 }
        guard case .finished(.success(42)) = outcome else {
            Issue.record("expected the work's value, got \(outcome)")
            return
        }
    }

    @Test func workPastItsTimeoutIsCancelledAndWaitedFor() async {
        let watching = Task { await deadlines.run() }
        defer { watching.cancel() }
        let ended = Atomic(false)
        let outcome = await LostSignal().race(timeout: .milliseconds(50), stopGrace: .seconds(60), deadlines: deadlines) {
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

    @Test func workThatIgnoresItsCancellationIsAbandonedAfterTheGrace() async {
        let watching = Task { await deadlines.run() }
        defer { watching.cancel() }
        let parked = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let outcome = await LostSignal().race(timeout: .milliseconds(50), stopGrace: .milliseconds(50), deadlines: deadlines) {
            // Waits for something cancellation does not end.
            await withCheckedContinuation { continuation in parked.withLock { $0 = continuation } }
            return 1
        }
        guard case .abandoned = outcome else {
            Issue.record("expected the work to be abandoned, got \(outcome)")
            return
        }
        // Let it go: its late result is dropped.
        while parked.withLock({ $0 }) == nil { await Task.yield() }
        parked.withLock { $0 }?.resume()
    }

    @Test func firingCancelsEveryRaceAndLaterRacesDoNotStart() async throws {
        let signal = LostSignal()
        let started = AsyncStream.makeStream(of: Void.self)
        async let first = signal.race(timeout: .seconds(60), stopGrace: .seconds(60), deadlines: deadlines) {
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
        let later = await signal.race(timeout: .seconds(60), stopGrace: .seconds(60), deadlines: deadlines) {
            ran.store(true, ordering: .relaxed)
        }
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
            await signal.race(timeout: .seconds(60), stopGrace: .seconds(60), deadlines: deadlines) {
                try await Task.sleep(for: .seconds(60))
            }
        }
        caller.cancel()
        guard case .finished(.failure(let error)) = await caller.value else {
            Issue.record("expected the work to end with its cancellation")
            return
        }
        #expect(error is CancellationError)
    }

    @Test func deadlinesFireOnceWhenDueAndNeverOnceRemoved() {
        let deadlines = HookDeadlines(resolution: .seconds(1))
        let start = ContinuousClock.now
        let fired = Mutex<[String]>([])
        _ = deadlines.add(start + .milliseconds(100)) { fired.withLock { $0.append("a") } }
        let removed = deadlines.add(start + .milliseconds(100)) { fired.withLock { $0.append("removed") } }
        _ = deadlines.add(start + .milliseconds(300)) { fired.withLock { $0.append("b") } }
        deadlines.remove(removed)
        deadlines.expire(asOf: start + .milliseconds(99))
        #expect(fired.withLock { $0 }.isEmpty, "nothing is due yet")
        deadlines.expire(asOf: start + .milliseconds(100))
        #expect(fired.withLock { $0 } == ["a"])
        deadlines.expire(asOf: start + .milliseconds(400))
        deadlines.expire(asOf: start + .milliseconds(500))
        #expect(fired.withLock { $0 } == ["a", "b"], "each fires once; a removed one never")
        #expect(HookDeadlines(forTimeout: .seconds(60)).resolution == .seconds(1))
        #expect(HookDeadlines(forTimeout: .milliseconds(100)).resolution == .milliseconds(10))
        #expect(HookDeadlines(forTimeout: .seconds(4)).resolution == .milliseconds(200))
    }

}

@Suite("Limiter: hook slots")
struct LimiterTests {
    @Test func aWaitForSeveralFreeSlotsEndsWhenEnoughAreFreeOrAtItsTimeout() async {
        let slots = Limiter(4)
        for _ in 0..<4 { await slots.acquire() }
        // Nothing frees up: the wait ends at its timeout.
        let start = ContinuousClock.now
        await slots.waitUntilAvailable(atLeast: 2, atMost: .milliseconds(50))
        #expect(ContinuousClock.now - start >= .milliseconds(50) && slots.available == 0)
        // Two free up one after the other: the wait ends after the second, long before its timeout.
        let waiter = Task {
            await slots.waitUntilAvailable(atLeast: 2, atMost: .seconds(60))
            return slots.available
        }
        while slots.watching == 0 { await Task.yield() }
        slots.release()
        #expect(slots.watching == 1, "one free slot is not enough")
        slots.release()
        let freeWhenWoken = await waiter.value
        #expect(freeWhenWoken == 2 && slots.watching == 0)
        #expect(ContinuousClock.now - start < .seconds(30))
    }
}
