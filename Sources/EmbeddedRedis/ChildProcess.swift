import Dispatch
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawn`, its output read line by line.
///
/// Foundation's `Process` spawns from whatever thread calls it; a Swift concurrency or Dispatch
/// thread blocks every signal, and the child inherits that mask, so SIGTERM never reaches it.
/// This spawns with an empty signal mask and default handlers, as a shell would.
public final class ChildProcess: Sendable {
    /// An error starting the process.
    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The process id.
    public let pid: pid_t
    private struct State {
        var status: Int32?
        var waiters: [UInt64: CheckedContinuation<Bool, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())

    /// Starts `executable` with `arguments`; every line it prints (stdout and stderr) goes to
    /// `output`, from a reader thread.
    public init(
        executable: String, arguments: [String], environment: [String: String]? = nil,
        output: @escaping @Sendable (String) -> Void
    ) throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SpawnError(description: "pipe() failed: errno \(errno)") }
        let (readEnd, writeEnd) = (fds[0], fds[1])

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        posix_spawn_file_actions_addclose(&actions, readEnd)
        posix_spawn_file_actions_addclose(&actions, writeEnd)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environmentList = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp: [UnsafeMutablePointer<CChar>?] = environmentList.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }

        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        close(writeEnd)
        guard result == 0 else {
            close(readEnd)
            throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid

        let outputDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { outputDone.signal() }
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending.append(contentsOf: chunk[0..<count])
                while let newline = pending.firstIndex(of: 10) {
                    output(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { output(String(decoding: pending, as: UTF8.self)) }
            close(readEnd)
        }
        let state = self.state
        let child = pid
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            // Report the exit only after its output is read, so a waiter sees every line. (A forked
            // grandchild can hold the pipe open longer: do not wait for it past a second.)
            _ = outputDone.wait(timeout: .now() + 1)
            let waiters = state.withLockedValue { value in
                value.status = status
                defer { value.waiters = [:] }
                return value.waiters.values
            }
            for waiter in waiters { waiter.resume(returning: true) }
        }
    }

    /// Whether the process is still running.
    public var isRunning: Bool { state.withLockedValue { $0.status == nil } }

    /// The raw wait status once it has exited.
    public var waitStatus: Int32? { state.withLockedValue { $0.status } }

    /// The exit code, when it exited normally.
    public var exitCode: Int32? {
        guard let status = waitStatus, status & 0x7f == 0 else { return nil }
        return (status >> 8) & 0xff
    }

    /// Sends a signal.
    public func send(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits until the process exits and returns its wait status.
    public func waitForExit() async -> Int32 {
        _ = await waitForExit(timeout: nil)
        return waitStatus ?? 0
    }

    /// Waits at most `timeout` for the process to exit; true when it did.
    @discardableResult
    public func waitForExit(timeout: Duration?) async -> Bool {
        let id = state.withLockedValue { value in
            value.nextWaiter += 1
            return value.nextWaiter
        }
        return await withCheckedContinuation { continuation in
            let exited = state.withLockedValue { value in
                if value.status == nil { value.waiters[id] = continuation }
                return value.status != nil
            }
            if exited {
                continuation.resume(returning: true)
            } else if let timeout {
                let state = self.state
                Task {
                    try? await Task.sleep(for: timeout)
                    state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume(returning: false)
                }
            }
        }
    }
}

extension ChildProcess {
    /// Runs a program to its end; its exit status and everything it printed.
    public static func run(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        let output = NIOLockedValueBox("")
        let process = try ChildProcess(executable: executable, arguments: arguments) { line in
            output.withLockedValue { $0 += line + "\n" }
        }
        _ = await process.waitForExit()
        return (process.exitCode ?? -1, output.withLockedValue { $0 })
    }
}
