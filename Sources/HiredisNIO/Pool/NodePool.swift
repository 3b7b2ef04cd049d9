import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The pipelined connections to one Redis node: carries out what
/// ``ConnectionPoolStateMachine`` decides.
///
/// Connect attempts and back-off waits run inside ``run()`` (the client's `run()` calls it), never
/// in tasks of their own: a pool whose `run()` is not running makes no connection, and its callers
/// fail after the connect timeout with a message that says so.
final class NodePool: Sendable {
    /// Makes a connection on the given event loop.
    typealias Connect = @Sendable (any EventLoop) async throws(HiredisError) -> HiredisConnection

    private enum Work: Sendable {
        case connect(slot: Int)
        case backOff(slot: Int, delay: Duration)
    }

    private enum RunState {
        case notStarted, running, finished
    }

    private struct State {
        var machine: ConnectionPoolStateMachine<HiredisConnection, UInt64>
        var waiters: [UInt64: CheckedContinuation<HiredisConnection, any Error>] = [:]
        var nextWaiter: UInt64 = 0
        var run = RunState.notStarted
        /// When the connections were last replaced (``recycle()``).
        var recycled: ContinuousClock.Instant?
    }

    /// `host:port`, for messages and routing.
    let address: String
    private let connect: Connect
    /// The event loop of each slot's connection, fixed for the pool's life: a task that prefers
    /// the first one (``HiredisClient/taskExecutor``) keeps doing so across reconnects.
    private let eventLoops: [any EventLoop]
    private let configuration: HiredisConfiguration
    private let metrics: ClientMetrics
    private let state: NIOLockedValueBox<State>
    private let work: AsyncStream<Work>
    private let workContinuation: AsyncStream<Work>.Continuation

    init(
        address: String, configuration: HiredisConfiguration, metrics: ClientMetrics, eventLoops: [any EventLoop],
        connect: @escaping Connect
    ) {
        precondition(!eventLoops.isEmpty)
        self.address = address
        self.eventLoops = eventLoops
        self.configuration = configuration
        self.metrics = metrics
        self.connect = connect
        let backoff = ConnectionPoolStateMachine<HiredisConnection, UInt64>.Backoff(
            initial: configuration.reconnectInitialDelay, maximum: configuration.reconnectMaximumDelay)
        state = NIOLockedValueBox(State(machine: ConnectionPoolStateMachine(size: configuration.poolSize, backoff: backoff)))
        (work, workContinuation) = AsyncStream.makeStream(of: Work.self)
    }

    // MARK: Leasing

    /// A connected connection: round robin over the connected ones; when none is up, the outcome
    /// of the next connect attempt, within the connect timeout plus the longest back-off, or until
    /// `deadline` if that comes first.
    @inline(__always)  // The common case takes no async frame of its own (each costs an executor check).
    func connection(deadline: ContinuousClock.Instant? = nil) async throws -> HiredisConnection {
        if let connection = try readyConnection() { return connection }
        return try await waitForConnection(deadline: deadline)
    }

    /// A connection that is up now (round robin), nil when none is, or the pool's error when it
    /// is shut down. A connection found closed before its close callback ran is reported now, so
    /// that no caller lands on it again.
    private func readyConnection() throws -> HiredisConnection? {
        // Found outside the lock: the caller's own loop, whose connections it prefers (replies then
        // resume it without a hop to another thread) while they have room: past half their pending
        // bound, callers spread over the others rather than meet `overloaded` while those are free.
        let loops = eventLoops
        let ownLoop = loops.first { $0.inEventLoop }
        for _ in 0...configuration.poolSize {
            let fast: ConnectionPoolStateMachine<HiredisConnection, UInt64>.Action? = state.withLockedValue { state in
                guard state.machine.hasConnection || state.machine.isShutDown else { return nil }
                state.nextWaiter += 1
                guard let ownLoop else { return state.machine.lease(state.nextWaiter) }
                return state.machine.lease(state.nextWaiter) { slot, connection in
                    loops[slot % loops.count] === ownLoop && !connection.isCrowded
                }
            }
            switch fast {
            case .use(let connection)?:
                if connection.isOpen { return connection }
                perform(state.withLockedValue { $0.machine.connectionClosed(connection) })
            case .fail(let error)?:
                throw error
            default:
                return nil
            }
        }
        return nil
    }

    private func waitForConnection(deadline: ContinuousClock.Instant?) async throws -> HiredisConnection {
        let id = state.withLockedValue { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let (limit, expiry) = configuration.waitLimit(deadline: deadline)
        let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
        defer { timer.withLockedValue { $0?.cancel() } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HiredisConnection, any Error>) in
                var closed: [ConnectionPoolStateMachine<HiredisConnection, UInt64>.Action] = []
                let action = state.withLockedValue { state in
                    var action = state.machine.lease(id)
                    // A closed connection the callback has not reported yet does not count.
                    while case .use(let connection) = action, !connection.isOpen {
                        closed.append(state.machine.connectionClosed(connection))
                        action = state.machine.lease(id)
                    }
                    if case .wait = action { state.waiters[id] = continuation }
                    return action
                }
                for reconnect in closed { perform(reconnect) }
                switch action {
                case .use(let connection): continuation.resume(returning: connection)
                case .fail(let error): continuation.resume(throwing: error)
                case .wait(let slots):
                    // Scheduled once the waiter is registered: a timer that fired before would
                    // find nobody, and the waiter would have no time limit.
                    let scheduled = configuration.eventLoopGroup.any().scheduleTask(in: limit.timeAmount) { [weak self, expiry] in
                        guard let self else { return }
                        self.giveUp(id, error: expiry)
                    }
                    timer.withLockedValue { $0 = scheduled }
                    for slot in slots { workContinuation.yield(.connect(slot: slot)) }
                default: continuation.resume(throwing: HiredisError.clientClosed)
                }
            }
        } onCancel: {
            self.giveUp(id, error: CancellationError())
        }
    }

    private func giveUp(_ id: UInt64, error: (any Error)? = nil) {
        let (continuation, run) = state.withLockedValue { state in
            _ = state.machine.cancel(id)
            return (state.waiters.removeValue(forKey: id), state.run)
        }
        guard let continuation else { return }
        if let error {
            continuation.resume(throwing: error)
        } else if run == .notStarted {
            continuation.resume(
                throwing: HiredisError.cannotConnect(
                    address: address, reason: "the client is not running: add it to a ServiceGroup or call run()"))
        } else {
            continuation.resume(throwing: HiredisError.cannotConnect(address: address, reason: "no connection within the connect timeout"))
        }
    }

    /// Replaces every connection (after a failover, to reach the new primary): each slot
    /// reconnects at once, and the old connection is retired, so that the commands it carries
    /// get their answers (a demoted primary's `READONLY` is retried; closed, they would fail as
    /// "may have run").
    ///
    /// Calls within ``HiredisConfiguration/reconnectMaximumDelay`` of the last one do nothing: the
    /// retired connections answer `READONLY` to what they carried, and each such reply asks for
    /// a recycle, which would otherwise retire the fresh connections again and again.
    func recycle() {
        let (connections, actions) = state.withLockedValue { state in
            let now = ContinuousClock.now
            if let last = state.recycled, now - last < configuration.reconnectMaximumDelay {
                return ([HiredisConnection](), [ConnectionPoolStateMachine<HiredisConnection, UInt64>.Action]())
            }
            state.recycled = now
            let connections = state.machine.connections
            return (connections, connections.map { state.machine.connectionClosed($0) })
        }
        for action in actions { perform(action) }
        for connection in connections {
            connection.retire(
                refusing: .connectionLost(reason: "reconnecting to the new primary", written: false), within: configuration.commandTimeout)
        }
    }

    /// Stops the pool because its node left the topology: waiters and later callers get `error`
    /// (retryable: the command belongs on another node now), and the connections are retired,
    /// not closed: commands in flight get the node's answers (`MOVED` is followed), within the
    /// command timeout.
    func retire(failingWith error: HiredisError) {
        let action = state.withLockedValue { state in
            state.run = .finished
            return state.machine.shutDown(failingWith: error)
        }
        workContinuation.finish()
        guard case .shutDown(let connections, let ids, let error) = action else { return }
        var continuations = takeWaiters(ids)
        continuations += state.withLockedValue { state in
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for continuation in continuations { continuation.resume(throwing: error) }
        for connection in connections { connection.retire(refusing: error, within: configuration.commandTimeout) }
    }

    /// The connections up now.
    var openConnections: [HiredisConnection] { state.withLockedValue { $0.machine.connections } }

    // MARK: Running

    /// Makes the connections and keeps them up until the task is cancelled; then closes them and
    /// fails whoever waits.
    func run() async {
        let warm = state.withLockedValue { state -> [Int] in
            state.run = .running
            return state.machine.warmUp()
        }
        for slot in warm { workContinuation.yield(.connect(slot: slot)) }
        await withTaskGroup(of: Void.self) { group in
            for await item in work.cancelOnGracefulShutdown() {
                switch item {
                case .connect(let slot):
                    group.addTask { await self.attemptConnect(slot: slot) }
                case .backOff(let slot, let delay):
                    group.addTask {
                        try? await Task.sleep(for: delay.jittered)
                        guard !Task.isCancelled else { return }
                        self.perform(self.state.withLockedValue { $0.machine.backOffEnded(slot: slot) })
                    }
                }
            }
            group.cancelAll()
        }
        shutDown()
    }

    /// Stops the pool (also when `run()` never ran); its waiters, and callers after them, get `error`.
    func shutDown(failingWith error: HiredisError = .clientClosed) {
        let action = state.withLockedValue { state in
            state.run = .finished
            return state.machine.shutDown(failingWith: error)
        }
        workContinuation.finish()
        perform(action)
    }

    private func attemptConnect(slot: Int) async {
        do {
            let connection = try await connect(eventLoops[slot % eventLoops.count])
            connection.closeFuture.whenComplete { [weak self] _ in
                guard let self else { return }
                self.perform(self.state.withLockedValue { $0.machine.connectionClosed(slot: slot, connection) })
            }
            perform(state.withLockedValue { $0.machine.connected(slot: slot, connection) })
        } catch {
            configuration.logger.debug("Redis connect attempt failed", metadata: ["address": "\(address)", "error": "\(error)"])
            perform(state.withLockedValue { $0.machine.connectFailed(slot: slot, error: error) })
        }
    }

    private func perform(_ action: ConnectionPoolStateMachine<HiredisConnection, UInt64>.Action) {
        switch action {
        case .none, .use, .fail, .wait:
            break
        case .connect(let slot):
            metrics.reconnects.increment()
            configuration.logger.info("Redis connection lost; reconnecting", metadata: ["address": "\(address)"])
            workContinuation.yield(.connect(slot: slot))
        case .resume(let ids, let connection):
            for continuation in takeWaiters(ids) { continuation.resume(returning: connection) }
        case .failAndBackOff(let ids, let error, let slot, let delay):
            for continuation in takeWaiters(ids) { continuation.resume(throwing: error) }
            workContinuation.yield(.backOff(slot: slot, delay: delay))
        case .backOff(let slot, let delay):
            workContinuation.yield(.backOff(slot: slot, delay: delay))
        case .shutDown(let connections, let ids, let error):
            var continuations = takeWaiters(ids)
            continuations += state.withLockedValue { state in
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for continuation in continuations { continuation.resume(throwing: error) }
            for connection in connections { connection.close() }
        case .close(let connection):
            connection.close()
        }
    }

    private func takeWaiters(_ ids: [UInt64]) -> [CheckedContinuation<HiredisConnection, any Error>] {
        state.withLockedValue { state in ids.compactMap { state.waiters.removeValue(forKey: $0) } }
    }
}
