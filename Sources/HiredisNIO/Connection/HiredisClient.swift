import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A pool of connections to one Redis server: the object an application shares.
///
/// Concurrent callers share connections: commands issued while others are in flight are written
/// together and their replies matched in order. The pool spreads callers over
/// ``HiredisConfiguration/poolSize`` connections round robin.
///
/// When the server goes away, commands in flight fail at once with
/// ``HiredisError/connectionLost(reason:)``; the pool reconnects in the background with capped
/// exponential backoff. A caller arriving while no connection is up waits for the next attempt
/// (at most ``HiredisConfiguration/reconnectMaximumDelay`` plus ``HiredisConfiguration/connectTimeout``)
/// and gets its outcome: a working connection, or the attempt's error.
///
/// ```swift
/// let client = try HiredisClient(configuration: HiredisConfiguration(url: "redis://127.0.0.1:6379"))
/// try await client.set("greeting", to: "hello")
/// let value = try await client.get("greeting")
/// await client.close()
/// ```
public final class HiredisClient: HiredisClientProtocol {
    private enum Phase {
        case idle
        case connecting(waiters: [CheckedContinuation<HiredisConnection, any Error>])
        case connected(HiredisConnection)
        case waitingToReconnect(lastError: HiredisError, waiters: [CheckedContinuation<HiredisConnection, any Error>])
    }

    private struct Slot {
        var phase: Phase = .idle
        var failures = 0
    }

    private struct State {
        var slots: [Slot]
        var next = 0
        var closed = false
        var exclusiveIdle: [HiredisConnection] = []
        var libraries: [LuaLibrary] = []
    }

    /// The configuration the client was made with.
    public let configuration: HiredisConfiguration
    private let state: NIOLockedValueBox<State>
    private let metrics: ClientMetrics
    private var logger: Logger { configuration.logger }

    /// A client for `configuration`. Connections are made on first use.
    public init(configuration: HiredisConfiguration) throws(HiredisError) {
        try configuration.validate()
        self.configuration = configuration
        self.state = NIOLockedValueBox(State(slots: Array(repeating: Slot(), count: configuration.poolSize)))
        self.metrics = ClientMetrics(factory: configuration.metricsFactory)
    }

    // MARK: HiredisClientProtocol

    /// Sends one command on a pooled connection and returns its reply.
    public func send(_ command: RESPCommand) async throws -> RESPReply {
        try await metrics.measure {
            try await connection().send(command)
        }
    }

    /// Sends one command with its own timeout.
    public func send(_ command: RESPCommand, timeout: Duration) async throws -> RESPReply {
        try await metrics.measure {
            try await connection().send(command, timeout: timeout)
        }
    }

    /// Sends several commands in one round trip on one pooled connection.
    public func pipeline(_ commands: [RESPCommand]) async throws -> [RESPReply] {
        try await metrics.measure(commands.count) {
            try await connection().pipeline(commands)
        }
    }

    // MARK: Function libraries

    /// Loads `library` on every connection the client makes from now on, unless the server has it
    /// already. A call to one of its functions on a server that lacks it (a connection made
    /// earlier, a `FUNCTION FLUSH`) loads it then
    /// (``HiredisClientProtocol/call(_:in:keys:arguments:readOnly:)``).
    public func preload(_ library: LuaLibrary) {
        state.withLockedValue { state in
            if !state.libraries.contains(library) { state.libraries.append(library) }
        }
    }

    private var libraries: [LuaLibrary] { state.withLockedValue { $0.libraries } }

    // MARK: Exclusive connections

    /// Lends a connection to `body` alone, for what cannot share one: `WATCH`/`MULTI` spanning
    /// awaits, blocking pops, `CLIENT` commands about this connection.
    ///
    /// The connection returns to a small idle list afterwards, unless `body` threw (its state is
    /// then unknown, so it is closed).
    public func withExclusiveConnection<T: Sendable>(_ body: (HiredisConnection) async throws -> T) async throws -> T {
        let reused: HiredisConnection? = try state.withLockedValue { state in
            if state.closed { throw HiredisError.clientClosed }
            while let connection = state.exclusiveIdle.popLast() {
                if connection.isOpen { return connection }
            }
            return nil
        }
        let connection: HiredisConnection
        if let reused {
            connection = reused
        } else {
            connection = try await HiredisConnection.connect(configuration: configuration, libraries: libraries)
        }
        do {
            let result = try await body(connection)
            let keep = state.withLockedValue { state in
                guard !state.closed, connection.isOpen, state.exclusiveIdle.count < configuration.poolSize else { return false }
                state.exclusiveIdle.append(connection)
                return true
            }
            if !keep { connection.close() }
            return result
        } catch {
            connection.close()
            throw error
        }
    }

    // MARK: Lifecycle

    /// Closes every connection; later calls throw ``HiredisError/clientClosed``.
    public func close() async {
        let (connections, waiters) = state.withLockedValue { state in
            state.closed = true
            var connections = state.exclusiveIdle
            var waiters: [CheckedContinuation<HiredisConnection, any Error>] = []
            state.exclusiveIdle = []
            for index in state.slots.indices {
                switch state.slots[index].phase {
                case .connected(let connection): connections.append(connection)
                case .connecting(let list), .waitingToReconnect(_, let list): waiters += list
                case .idle: break
                }
                state.slots[index].phase = .idle
            }
            return (connections, waiters)
        }
        for waiter in waiters { waiter.resume(throwing: HiredisError.clientClosed) }
        for connection in connections {
            connection.close()
            try? await connection.closeFuture.get()
        }
    }

    /// A connected pooled connection: round robin over the connected slots; when none is up,
    /// the outcome of the next connect attempt.
    func connection() async throws -> HiredisConnection {
        enum Pick {
            case ready(HiredisConnection)
            case wait
            case start([Int])
        }
        // Fast path without a continuation.
        let fast: HiredisConnection? = try state.withLockedValue { state in
            if state.closed { throw HiredisError.clientClosed }
            let count = state.slots.count
            let start = state.next
            state.next = (start + 1) % count
            for offset in 0..<count {
                if case .connected(let connection) = state.slots[(start + offset) % count].phase, connection.isOpen {
                    return connection
                }
            }
            return nil
        }
        if let fast { return fast }

        return try await withCheckedThrowingContinuation { continuation in
            let pick: Pick = state.withLockedValue { state in
                if state.closed {
                    continuation.resume(throwing: HiredisError.clientClosed)
                    return .wait
                }
                for index in state.slots.indices {
                    if case .connected(let connection) = state.slots[index].phase, connection.isOpen {
                        return .ready(connection)
                    }
                }
                // Join an attempt under way, or the next scheduled one.
                for index in state.slots.indices {
                    switch state.slots[index].phase {
                    case .connecting(var waiters):
                        waiters.append(continuation)
                        state.slots[index].phase = .connecting(waiters: waiters)
                        return .wait
                    default: continue
                    }
                }
                for index in state.slots.indices {
                    if case .waitingToReconnect(let error, var waiters) = state.slots[index].phase {
                        waiters.append(continuation)
                        state.slots[index].phase = .waitingToReconnect(lastError: error, waiters: waiters)
                        return .wait
                    }
                }
                // Nothing under way: start every idle slot; this caller waits on the first.
                var started: [Int] = []
                for index in state.slots.indices {
                    if case .idle = state.slots[index].phase {
                        state.slots[index].phase = .connecting(waiters: started.isEmpty ? [continuation] : [])
                        started.append(index)
                    }
                }
                if started.isEmpty {
                    // A slot reported connected but its connection just closed: reconnect it.
                    state.slots[0].phase = .connecting(waiters: [continuation])
                    started = [0]
                }
                return .start(started)
            }
            switch pick {
            case .ready(let connection): continuation.resume(returning: connection)
            case .wait: break
            case .start(let slots): for slot in slots { attemptConnect(slot: slot) }
            }
        }
    }

    private func attemptConnect(slot: Int) {
        Task {
            do {
                let connection = try await HiredisConnection.connect(configuration: configuration, libraries: libraries)
                let waiters: [CheckedContinuation<HiredisConnection, any Error>]? = state.withLockedValue { state in
                    guard !state.closed else { return nil }
                    var waiters: [CheckedContinuation<HiredisConnection, any Error>] = []
                    if case .connecting(let list) = state.slots[slot].phase { waiters = list }
                    if state.slots[slot].failures > 0 { metrics.reconnects.increment() }
                    state.slots[slot] = Slot(phase: .connected(connection), failures: 0)
                    return waiters
                }
                guard let waiters else {
                    connection.close()
                    return
                }
                connection.closeFuture.whenComplete { [weak self] _ in self?.connectionLost(slot: slot, connection: connection) }
                for waiter in waiters { waiter.resume(returning: connection) }
            } catch {
                let redisError = error as? HiredisError ?? .cannotConnect(address: configuration.address, reason: "\(error)")
                connectFailed(slot: slot, error: redisError)
            }
        }
    }

    private func connectFailed(slot: Int, error: HiredisError) {
        let (waiters, delay): ([CheckedContinuation<HiredisConnection, any Error>], Duration?) = state.withLockedValue { state in
            var waiters: [CheckedContinuation<HiredisConnection, any Error>] = []
            if case .connecting(let list) = state.slots[slot].phase { waiters = list }
            if state.closed { return (waiters, nil) }
            state.slots[slot].failures += 1
            state.slots[slot].phase = .waitingToReconnect(lastError: error, waiters: [])
            return (waiters, backoff(failures: state.slots[slot].failures))
        }
        logger.debug("Redis connect attempt failed", metadata: ["error": "\(error)"])
        for waiter in waiters { waiter.resume(throwing: error) }
        if let delay { scheduleReconnect(slot: slot, after: delay) }
    }

    private func connectionLost(slot: Int, connection: HiredisConnection) {
        let reconnect = state.withLockedValue { state in
            guard !state.closed, case .connected(let current) = state.slots[slot].phase, current === connection else { return false }
            state.slots[slot].failures = 1
            state.slots[slot].phase = .waitingToReconnect(lastError: .connectionLost(reason: "connection closed"), waiters: [])
            return true
        }
        if reconnect {
            logger.info("Redis connection lost; reconnecting", metadata: ["address": "\(configuration.address)"])
            scheduleReconnect(slot: slot, after: configuration.reconnectInitialDelay)
        }
    }

    private func scheduleReconnect(slot: Int, after delay: Duration) {
        Task {
            try? await Task.sleep(for: delay)
            let go = state.withLockedValue { state in
                guard !state.closed, case .waitingToReconnect(_, let waiters) = state.slots[slot].phase else { return false }
                state.slots[slot].phase = .connecting(waiters: waiters)
                return true
            }
            if go { attemptConnect(slot: slot) }
        }
    }

    /// Capped exponential backoff: initial × 2^(failures−1), at most the maximum.
    private func backoff(failures: Int) -> Duration {
        let factor = 1 << min(failures - 1, 20)
        return min(configuration.reconnectInitialDelay * factor, configuration.reconnectMaximumDelay)
    }
}
