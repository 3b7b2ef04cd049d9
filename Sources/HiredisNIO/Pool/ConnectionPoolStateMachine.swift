/// The connections to one Redis node, as a plain state machine: an event goes in, an action comes
/// out; the pool (``NodePool``) carries the actions out. No I/O, no clock: unit-tested alone.
///
/// The pool keeps `size` connections. Each slot is idle, connecting, connected, or backing off
/// after a failure (capped exponential back-off, counted per slot). Callers lease a connected
/// slot round robin; with none connected they wait for the next connect attempt and get its
/// outcome (a connection, or the attempt's error). A caller may say which connected slots it
/// prefers (those on its own event loop): it gets one of them, round robin, when there is one.
/// A lost connection is replaced at once; a failed attempt is retried after its back-off whether
/// or not anybody waits, so that the pool is ready again as soon as the server is.
struct ConnectionPoolStateMachine<Connection: AnyObject & Sendable, Waiter: Hashable & Sendable>: Sendable {
    enum Slot: Sendable {
        case idle
        case connecting
        case connected(Connection)
        case backingOff
    }

    /// What the pool must do.
    enum Action: Sendable {
        /// Nothing.
        case none
        /// Use this connection.
        case use(Connection)
        /// The caller waits; start these connect attempts (possibly none).
        case wait(connect: [Int])
        /// Fail the caller at once.
        case fail(HiredisError)
        /// Start a connect attempt for the slot.
        case connect(slot: Int)
        /// Hand the connection to these waiters.
        case resume([Waiter], with: Connection)
        /// Fail these waiters and retry the slot after `delay`.
        case failAndBackOff([Waiter], error: HiredisError, slot: Int, delay: Duration)
        /// Wait `delay`, then report ``backOffEnded(slot:)``.
        case backOff(slot: Int, delay: Duration)
        /// Close these connections, fail these waiters with `error`.
        case shutDown(close: [Connection], fail: [Waiter], error: HiredisError)
        /// Close a connection the pool no longer wants.
        case close(Connection)
    }

    struct Backoff: Sendable {
        var initial: Duration
        var maximum: Duration

        /// initial × 2^(failures − 1), at most the maximum.
        func delay(afterFailures failures: Int) -> Duration {
            min(initial * (1 << min(max(failures - 1, 0), 20)), maximum)
        }
    }

    private(set) var slots: [Slot]
    private var failures: [Int]
    private var waiters: [Waiter] = []
    private var next = 0
    /// Why the pool stopped (nil while it runs): what waiters and later leases are failed with.
    private(set) var stoppedWith: HiredisError?
    var isShutDown: Bool { stoppedWith != nil }
    private let backoff: Backoff

    init(size: Int, backoff: Backoff) {
        precondition(size >= 1)
        slots = Array(repeating: .idle, count: size)
        failures = Array(repeating: 0, count: size)
        self.backoff = backoff
    }

    /// How many callers wait for a connection.
    var waiterCount: Int { waiters.count }

    /// Whether any slot is connected (without building ``connections``: asked on every lease).
    var hasConnection: Bool {
        slots.contains { if case .connected = $0 { true } else { false } }
    }

    /// The connected connections.
    var connections: [Connection] {
        slots.compactMap { if case .connected(let connection) = $0 { return connection } else { return nil } }
    }

    // MARK: Events

    /// A caller wants a connection: round robin over the connected slots that `isPreferred`
    /// accepts (the pool accepts those on the caller's own thread that are not crowded), otherwise
    /// as ``lease(_:)``.
    mutating func lease(_ waiter: Waiter, preferring isPreferred: (Int, Connection) -> Bool) -> Action {
        if stoppedWith == nil {
            let count = slots.count
            for offset in 0..<count {
                let index = (next + offset) % count
                if case .connected(let connection) = slots[index], isPreferred(index, connection) {
                    next = (index + 1) % count
                    return .use(connection)
                }
            }
        }
        return lease(waiter)
    }

    /// A caller wants a connection: round robin over the connected slots.
    mutating func lease(_ waiter: Waiter) -> Action {
        if let stoppedWith { return .fail(stoppedWith) }
        let count = slots.count
        for offset in 0..<count {
            let index = (next + offset) % count
            if case .connected(let connection) = slots[index] {
                next = (index + 1) % count
                return .use(connection)
            }
        }
        waiters.append(waiter)
        // Start every idle slot; slots connecting or backing off will report by themselves.
        var start: [Int] = []
        for index in slots.indices {
            if case .idle = slots[index] {
                slots[index] = .connecting
                start.append(index)
            }
        }
        return .wait(connect: start)
    }

    /// A waiter gave up (timeout, cancellation): forget it. Returns whether it was still waiting.
    mutating func cancel(_ waiter: Waiter) -> Bool {
        guard let index = waiters.firstIndex(of: waiter) else { return false }
        waiters.remove(at: index)
        return true
    }

    /// Asks the pool to fill every idle slot (at start, so the first caller does not pay for it).
    mutating func warmUp() -> [Int] {
        if isShutDown { return [] }
        var start: [Int] = []
        for index in slots.indices {
            if case .idle = slots[index] {
                slots[index] = .connecting
                start.append(index)
            }
        }
        return start
    }

    /// A connect attempt succeeded.
    mutating func connected(slot: Int, _ connection: Connection) -> Action {
        guard !isShutDown, case .connecting = slots[slot] else { return .close(connection) }
        slots[slot] = .connected(connection)
        failures[slot] = 0
        let waiting = waiters
        waiters = []
        return waiting.isEmpty ? .none : .resume(waiting, with: connection)
    }

    /// A connect attempt failed: the waiters get its error (they asked for the outcome of the
    /// next attempt), and the slot tries again after its back-off.
    mutating func connectFailed(slot: Int, error: HiredisError) -> Action {
        guard !isShutDown, case .connecting = slots[slot] else { return .none }
        failures[slot] += 1
        slots[slot] = .backingOff
        // Other slots may still be connecting: their waiters are the same callers, so the first
        // outcome answers them all.
        let waiting = waiters
        waiters = []
        return .failAndBackOff(waiting, error: error, slot: slot, delay: backoff.delay(afterFailures: failures[slot]))
    }

    /// A connection closed (the server went away, a protocol error, a health check failed).
    mutating func connectionClosed(_ connection: Connection) -> Action {
        guard
            let slot = slots.firstIndex(where: {
                if case .connected(let current) = $0 { return current === connection } else { return false }
            })
        else { return .none }
        return connectionClosed(slot: slot, connection)
    }

    /// A connection closed (the server went away, a protocol error, a health check failed).
    mutating func connectionClosed(slot: Int, _ connection: Connection) -> Action {
        guard !isShutDown, case .connected(let current) = slots[slot], current === connection else { return .none }
        // Reconnect at once: a loss is not a failed attempt, so a failing reconnect then waits
        // the initial back-off.
        failures[slot] = 0
        slots[slot] = .connecting
        return .connect(slot: slot)
    }

    /// A slot's back-off is over.
    mutating func backOffEnded(slot: Int) -> Action {
        guard !isShutDown, case .backingOff = slots[slot] else { return .none }
        slots[slot] = .connecting
        return .connect(slot: slot)
    }

    /// The pool stops: close everything, fail every waiter (and every later lease) with `error`:
    /// `clientClosed` when the client stops, a retryable `cannotConnect` when the node left a
    /// cluster's topology (the command never went out and belongs on another node now).
    mutating func shutDown(failingWith error: HiredisError = .clientClosed) -> Action {
        if isShutDown { return .none }
        stoppedWith = error
        let open = connections
        let waiting = waiters
        waiters = []
        slots = slots.map { _ in .idle }
        return .shutDown(close: open, fail: waiting, error: error)
    }
}
