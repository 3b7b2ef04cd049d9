import NIOCore
import Synchronization

/// A NIO event loop as a Swift task executor.
///
/// A task that prefers it (`withTaskExecutorPreference`) runs its nonisolated code on the loop's
/// thread; when it awaits a reply of a connection on that loop, the reply resumes it right there
/// instead of handing it to the global executor's threads. ``HiredisClient/taskExecutor`` is the
/// one for a client's connections.
public final class EventLoopTaskExecutor: TaskExecutor {
    /// The loop the tasks run on.
    public let eventLoop: any EventLoop

    /// Jobs waiting for the loop, and whether a loop task to run them is on its way.
    ///
    /// One read of many replies resumes many callers: they all go into this queue and the loop
    /// runs them in one of its tasks, instead of one loop task (and one closure allocation) per
    /// job.
    private struct Queue {
        var jobs: [UnownedJob] = []
        /// The last drained array, emptied, kept for its capacity.
        var spare: [UnownedJob] = []
        var drainScheduled = false
    }

    private let queue = Mutex(Queue())

    /// An executor that runs jobs on `eventLoop`.
    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Runs `job` on the event loop (after what the loop is doing now), in the order jobs came.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let mustSchedule = queue.withLock { queue in
            queue.jobs.append(job)
            if queue.drainScheduled { return false }
            queue.drainScheduled = true
            return true
        }
        // The closure captures only `self`, which then serves as its context: no allocation.
        if mustSchedule { eventLoop.execute { self.runQueuedJobs() } }
    }

    /// Runs the jobs queued so far; jobs they enqueue wait for the next loop task, so that other
    /// work on the loop gets its turn.
    private func runQueuedJobs() {
        var jobs = queue.withLock { queue in
            queue.drainScheduled = false
            let taken = queue.jobs
            queue.jobs = queue.spare
            queue.spare = []
            return taken
        }
        let executor = asUnownedTaskExecutor()
        for job in jobs { job.runSynchronously(on: executor) }
        // Keep the array's storage for a later drain unless a burst made it large.
        guard jobs.capacity <= 1024 else { return }
        jobs.removeAll(keepingCapacity: true)
        queue.withLock { $0.spare = jobs }
    }
}
