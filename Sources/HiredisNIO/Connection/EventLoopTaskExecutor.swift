import NIOCore

/// A NIO event loop as a Swift task executor.
///
/// A task that prefers it (`withTaskExecutorPreference`) runs its nonisolated code on the loop's
/// thread; when it awaits a reply of a connection on that loop, the reply resumes it right there
/// instead of handing it to the global executor's threads. ``HiredisClient/taskExecutor`` is the
/// one for a client's connections.
public final class EventLoopTaskExecutor: TaskExecutor {
    /// The loop the tasks run on.
    public let eventLoop: any EventLoop

    /// An executor that runs jobs on `eventLoop`.
    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `job` on the event loop (after what the loop is doing now).
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
