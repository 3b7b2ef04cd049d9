import BenchmarkSupport
import HiredisNIO
import NIOCore
import NIOPosix

/// A connection with no socket and no Redis: what a command costs the client in Swift's
/// concurrency runtime and on the event loop alone.
///
/// A call does what ``HiredisConnection`` does around the wire: a cancellation handler, a
/// continuation, its entry in a queue owned by the loop, one loop task per batch that "reads" the
/// replies and resumes every waiting caller (on the caller's task executor). No encoding, no
/// system call, no parsing. `ClientBenchmark --runtime-floor CALLERS` runs it with the same load
/// harness as the real GETs: its client CPU per call is the floor under any client of this shape,
/// against which the throughput goals (client CPU per call the machine leaves beside Redis) are
/// weighed.
final class SocketlessConnection: @unchecked Sendable {
    let eventLoop: any EventLoop
    /// Touched on the loop only.
    private var waiting: [UnsafeContinuation<Int, any Error>] = []
    private var batchScheduled = false

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func call() async throws -> Int {
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Int, any Error>) in
                if eventLoop.inEventLoop {
                    enqueue(continuation)
                } else {
                    eventLoop.execute { self.enqueue(continuation) }
                }
            }
        } onCancel: {
        }
    }

    private func enqueue(_ continuation: UnsafeContinuation<Int, any Error>) {
        waiting.append(continuation)
        guard !batchScheduled else { return }
        batchScheduled = true
        eventLoop.execute { self.answerAll() }
    }

    private func answerAll() {
        batchScheduled = false
        let batch = waiting
        waiting.removeAll(keepingCapacity: true)
        for continuation in batch { continuation.resume(returning: 1) }
    }
}

extension SocketlessConnection {
    /// `total` calls from `callers` tasks on one socketless connection per loop of the library's
    /// default group, each caller preferring its connection's loop (as our GET callers do).
    static func measure(callers: Int, total: Int) async throws -> LoadResult {
        let connections = MultiThreadedEventLoopGroup.singleton.makeIterator().map { SocketlessConnection(eventLoop: $0) }
        let executors = connections.map { EventLoopTaskExecutor($0.eventLoop) }
        return try await runLoad(concurrency: callers, total: total, executors: executors) { task, _ in
            _ = try await connections[task % connections.count].call()
        }
    }
}
