import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import HiredisNIO

@Suite("Event loop task executor")
struct EventLoopTaskExecutorTests {
    /// One read of many replies resumes many callers at once: they run on the loop, in the order
    /// they were resumed, and work they hand back to the executor (a yield) runs too.
    @Test func callersResumedTogetherRunOnTheLoopInOrder() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let executor = EventLoopTaskExecutor(loop)
        let callers = 500
        let waiting = Shared<[(Int, CheckedContinuation<Void, Never>)]>([])
        let ran = Shared<[Int]>([])
        let offLoop = Shared(0)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for index in 0..<callers {
                tasks.addTask(executorPreference: executor) {
                    await withCheckedContinuation { continuation in waiting.withLock { $0.append((index, continuation)) } }
                    if !loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                    ran.withLock { $0.append(index) }
                    await Task.yield()
                    if !loop.inEventLoop { offLoop.withLock { $0 += 1 } }
                }
            }
            while waiting.withLock({ $0.count }) < callers { await Task.yield() }
            let resumeOrder = waiting.withLock { $0 }
            // All resumed from one loop task, as a read of many replies does.
            try await loop.submit { for (_, continuation) in resumeOrder { continuation.resume() } }.get()
            try await tasks.waitForAll()
            #expect(ran.withLock { $0 } == resumeOrder.map(\.0))
        }
        #expect(offLoop.withLock { $0 } == 0)
        try await group.shutdownGracefully()
    }
}

/// A value several tasks update.
private final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}
