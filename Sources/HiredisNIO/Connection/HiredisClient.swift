import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// The object an application shares: pipelined connections to a standalone Redis, to the
/// primary a set of Sentinels names, or to every primary of a Redis Cluster
/// (``HiredisConfiguration/topology``).
///
/// The client is a swift-service-lifecycle `Service`: it starts nothing in `init`; its
/// ``run()`` makes the connections, replaces lost ones with capped exponential back-off, follows
/// Sentinel failovers and cluster topology changes, and on graceful shutdown or cancellation
/// closes everything. Put it first in the application's `ServiceGroup` (so that it stops last),
/// or use ``withRunning(_:)`` in scripts and tests.
///
/// Concurrent callers share connections: commands issued while others are in flight are written
/// together and their replies matched in order. Replies by which Redis refused a command for a
/// passing reason (`LOADING`, `BUSY`, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`) are retried with
/// back-off within the command's timeout.
///
/// ```swift
/// let client = try HiredisClient(configuration: HiredisConfiguration(url: "redis://127.0.0.1:6379"))
/// try await client.withRunning { client in
///     try await client.set("greeting", to: "hello")
///     let value = try await client.get("greeting")
/// }
/// ```
public final class HiredisClient: HiredisClientProtocol, Service {
    private struct State {
        var closed = false
        var exclusiveIdle: [HiredisConnection] = []
        var libraries: [LuaLibrary] = []
    }

    /// The configuration the client was made with.
    public let configuration: HiredisConfiguration
    /// `configuration.commandTimeout` as NIO's time amount, converted once (a `Duration`'s
    /// conversion costs 128-bit arithmetic on every command).
    private let commandTimeoutAmount: TimeAmount

    /// The event loop that the client's connections run on (the first of them when
    /// ``HiredisConfiguration/poolSize`` is above 1; on a cluster, the one of every node's first
    /// connection), as a task executor.
    ///
    /// A reply wakes the waiting task on Swift's global executor: a hop to another thread and
    /// back for every round trip. A task that prefers this executor runs on the connection's own
    /// thread instead, which makes a lone caller's round trip about a third shorter. Use it for work that
    /// mostly waits on Redis; CPU-heavy work belongs on the global executor.
    ///
    /// ```swift
    /// let value = try await withTaskExecutorPreference(client.taskExecutor) {
    ///     try await client.get("greeting")
    /// }
    /// ```
    public let taskExecutor: EventLoopTaskExecutor

    /// Every event loop the client's connections run on, as task executors (one per distinct
    /// loop; ``taskExecutor`` is the first).
    ///
    /// A caller running on one of these loops is given the connection on its own loop when that
    /// one is up, so its reply never crosses threads. Spreading many callers over these executors
    /// uses every loop's thread, where ``taskExecutor`` alone keeps them all on one.
    public let taskExecutors: [EventLoopTaskExecutor]
    private let state: NIOLockedValueBox<State>
    let metrics: ClientMetrics
    /// Function libraries being loaded again (single-flight, see ``LuaLibrary``).
    let libraryLoads = LibraryLoads()
    private let backend: Backend
    private var logger: Logger { configuration.logger }

    /// A client for `configuration`. Nothing connects before ``run()``.
    public init(configuration: HiredisConfiguration) throws(HiredisError) {
        try configuration.validate()
        self.configuration = configuration
        self.commandTimeoutAmount = configuration.commandTimeout.timeAmount
        let state = NIOLockedValueBox(State())
        self.state = state
        let metrics = ClientMetrics(factory: configuration.metricsFactory)
        self.metrics = metrics
        let libraries: @Sendable () -> [LuaLibrary] = { state.withLockedValue { $0.libraries } }
        // The event loop of each pool slot's connection, chosen once (every node's pool uses them).
        let eventLoops = (0..<configuration.poolSize).map { _ in configuration.eventLoopGroup.next() }
        var distinctLoops: [any EventLoop] = []
        for loop in eventLoops where !distinctLoops.contains(where: { $0 === loop }) { distinctLoops.append(loop) }
        taskExecutors = distinctLoops.map(EventLoopTaskExecutor.init)
        taskExecutor = taskExecutors[0]
        switch configuration.topology {
        case .standalone:
            let pool = NodePool(address: configuration.address, configuration: configuration, metrics: metrics, eventLoops: eventLoops) {
                (eventLoop) async throws(HiredisError) -> HiredisConnection in
                try await HiredisConnection.connect(configuration: configuration, libraries: libraries(), eventLoop: eventLoop)
            }
            backend = .single(pool)
        case .sentinel(let sentinels, let primaryName):
            let discovery = SentinelDiscovery(
                sentinels: sentinels, primaryName: primaryName, configuration: configuration)
            let pool = NodePool(
                address: "primary '\(primaryName)'", configuration: configuration, metrics: metrics, eventLoops: eventLoops
            ) { (eventLoop) async throws(HiredisError) -> HiredisConnection in
                try await discovery.connectToPrimary(libraries: libraries(), eventLoop: eventLoop)
            }
            discovery.onSwitch = { [weak pool] in pool?.recycle() }
            backend = .sentinel(pool, discovery)
        case .cluster(let seeds):
            backend = .cluster(
                ClusterRouter(seeds: seeds, configuration: configuration, metrics: metrics, eventLoops: eventLoops, libraries: libraries))
        }
    }

    // MARK: Service

    /// Makes and keeps the connections until graceful shutdown or cancellation, then closes them.
    public func run() async throws {
        switch backend {
        case .single(let pool):
            await pool.run()
        case .sentinel(let pool, let discovery):
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await pool.run() }
                group.addTask { await discovery.run() }
                await group.next()
                group.cancelAll()
            }
        case .cluster(let router):
            await router.run()
        }
        closeExclusive()
    }

    /// Runs `body` while ``run()`` runs in a child task, then stops it: for scripts, tools and
    /// tests. Applications put the client in their `ServiceGroup` instead.
    public func withRunning<T: Sendable>(_ body: (HiredisClient) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.run() }
            defer { group.cancelAll() }
            do {
                let result = try await body(self)
                group.cancelAll()
                return result
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    /// Stops the client without waiting for ``run()`` to return: connections close, later calls
    /// throw ``HiredisError/Code/clientClosed``.
    public func close() async {
        state.withLockedValue { $0.closed = true }
        switch backend {
        case .single(let pool), .sentinel(let pool, _): pool.shutDown()
        case .cluster(let router): router.shutDown()
        }
        closeExclusive()
    }

    private func closeExclusive() {
        let idle = state.withLockedValue { state in
            defer { state.exclusiveIdle = [] }
            return state.exclusiveIdle
        }
        for connection in idle { connection.close() }
    }

    /// The pool's connections that are up now (standalone and Sentinel; none on a cluster).
    var openPoolConnections: [HiredisConnection] {
        switch backend {
        case .single(let pool), .sentinel(let pool, _): return pool.openConnections
        case .cluster: return []
        }
    }

    // MARK: HiredisClientProtocol

    /// Sends one command and returns its reply; an error reply is thrown (``HiredisError/Code/server``).
    public func send(_ command: RESPCommand) async throws -> RESPReply {
        try await send(command, timeout: configuration.commandTimeout)
    }

    /// Sends one command with its own timeout (for example a blocking pop).
    @inline(__always)  // Every async frame on the way to the reply costs an executor check per call.
    public func send(_ command: RESPCommand, timeout: Duration) async throws -> RESPReply {
        try await metrics.measure {
            try await retryingTransient(timeout: timeout) { remaining, deadline in
                switch backend {
                case .single(let pool), .sentinel(let pool, _):
                    return try await pool.connection().send(command, timeout: remaining, deadline: deadline)
                case .cluster(let router):
                    return try await router.send(command, timeout: remaining)
                }
            }
        }
    }

    /// Sends several commands in one round trip and returns every reply in order (error replies
    /// as values). On a cluster, the commands are split by node (a command without a key goes
    /// with the one before it) and the replies put back in order.
    public func pipeline(_ commands: [RESPCommand]) async throws -> [RESPReply] {
        try await pipeline(commands, timeout: configuration.commandTimeout)
    }

    /// Sends several commands in one round trip with their own timeout.
    public func pipeline(_ commands: [RESPCommand], timeout: Duration) async throws -> [RESPReply] {
        if commands.isEmpty { return [] }
        // The replies of a try that a passing refusal made worth another: returned as they are
        // (error replies as values) when the time runs out.
        var refused: [RESPReply]?
        return try await metrics.measure(commands.count) {
            do {
                return try await retryingTransient(timeout: timeout) { remaining, _ in
                    refused = nil
                    let replies: [RESPReply]
                    var demoted = false
                    switch backend {
                    case .single(let pool):
                        replies = try await pool.connection().pipeline(commands, timeout: remaining)
                    case .sentinel(let pool, _):
                        replies = try await pool.connection().pipeline(commands, timeout: remaining)
                        // A node Sentinel demoted answers READONLY: its connections go, so that
                        // the next commands reach the new primary (as for a single command).
                        demoted = replies.contains { $0.isReadOnlyRefusal }
                        if demoted { pool.recycle() }
                    case .cluster(let router):
                        replies = try await router.pipeline(commands, timeout: remaining)
                    }
                    if configuration.retryTransientErrors,
                        let refusal = Self.transientRefusal(replies, of: commands, readOnlyPasses: demoted)
                    {
                        refused = replies
                        throw HiredisError.server(refusal)
                    }
                    return replies
                }
            } catch {
                if let refused { return refused }
                throw error
            }
        }
    }

    /// Runs commands inside `MULTI`/`EXEC` in one round trip and returns `EXEC`'s replies (see
    /// ``HiredisClientProtocol/transaction(_:)``).
    ///
    /// On a cluster the block goes to one node as a unit: its keys must share a hash slot (else
    /// ``HiredisError/Code/crossSlot`` before anything is sent: split over nodes, `MULTI` stayed open
    /// on a shared connection). A block refused because its slot moved (`MOVED` while queuing,
    /// then `EXECABORT`) ran nowhere and goes again, whole, to the slot's new owner.
    public func transaction(_ commands: [RESPCommand]) async throws -> [RESPReply] {
        let block = [RESPCommand("MULTI")] + commands + [RESPCommand("EXEC")]
        guard case .cluster(let router) = backend else { return try Self.results(ofTransaction: try await pipeline(block)) }
        let slots = Set(commands.compactMap(\.slot))
        guard slots.count <= 1 else { throw HiredisError.crossSlot(slots: slots.count) }
        let replies = try await metrics.measure(block.count) {
            try await router.transaction(block, slot: slots.first, timeout: configuration.commandTimeout)
        }
        return try Self.results(ofTransaction: replies)
    }

    /// Why a pipeline may be sent again as a whole: Redis refused at least one of its commands for
    /// a passing reason (``HiredisServerError/isTransient``), and every other command was refused
    /// so too or only reads, so that nothing that ran changes by running again. (A restarting
    /// Redis refuses `SET` with `LOADING` but answers `TIME`.) Nil when the pipeline must not be
    /// sent again.
    /// With `readOnlyPasses` (behind Sentinels), `READONLY` counts as such a refusal: a demoted
    /// primary ran none of the writes it refused, and the pool is reconnecting to the new one.
    static func transientRefusal(_ replies: [RESPReply], of commands: [RESPCommand], readOnlyPasses: Bool = false) -> HiredisServerError? {
        var refusal: HiredisServerError?
        for (command, reply) in zip(commands, replies) {
            if case .error(let text) = reply {
                let error = HiredisServerError(reply: text)
                guard error.isTransient || (readOnlyPasses && error.code == "READONLY") else { return nil }
                if refusal == nil { refusal = error }
            } else if !command.isReadOnly && !command.describesTheCommandBefore {
                // (A `WAIT` after a refused write counted nothing of it: it may go again.)
                return nil
            }
        }
        return refusal
    }

    /// Runs `body` (given the time left and the deadline) until it succeeds, throws something other
    /// than a transient refusal, or the timeout is spent, pausing as ``RetryBackoff`` says between
    /// tries. The clock is read once for a command that succeeds.
    @inline(__always)
    private func retryingTransient<T>(timeout: Duration, _ body: (Duration, NIODeadline) async throws -> T) async throws -> T {
        let deadline = NIODeadline.now() + (timeout == configuration.commandTimeout ? commandTimeoutAmount : timeout.timeAmount)
        var remaining = timeout
        var backoff = RetryBackoff()
        while true {
            do {
                return try await body(remaining, deadline)
            } catch let error as HiredisError where isRetryable(error) {
                guard let pause = backoff.next(left: .nanoseconds((deadline - .now()).nanoseconds)) else { throw error }
                metrics.retries.increment()
                try await Task.sleep(for: pause)
                remaining = max(.nanoseconds((deadline - .now()).nanoseconds), .milliseconds(1))
            }
        }
    }

    /// Whether Redis refused the command for a reason that passes: transient replies, a
    /// `READONLY` from a primary that Sentinel demoted (the pool reconnects to the new one), and,
    /// behind a cluster or Sentinels, a node that could not be reached.
    func isRetryable(_ error: HiredisError) -> Bool {
        guard configuration.retryTransientErrors else { return false }
        // Behind a cluster or Sentinels another node may take over: a command that never reached
        // a node is tried again once the topology is read again (already requested).
        // A redirection to a node the topology did not name (yet: a node asked during a reshard may
        // know more than the one the topology came from) never ran: again, within the deadline.
        if !error.commandMayHaveRun, error.code == .untrustedRedirection, case .cluster = backend { return true }
        if !error.commandMayHaveRun, error.code == .cannotConnect || error.code == .connectionLost {
            switch backend {
            case .single: return false
            case .sentinel, .cluster: return true
            }
        }
        // A refusal by one node of a split pipeline whose other parts may have run: not again.
        guard !error.commandMayHaveRun, let reply = error.serverError else { return false }
        if reply.isTransient { return true }
        if reply.code == "READONLY", case .sentinel(let pool, _) = backend {
            pool.recycle()
            return true
        }
        return false
    }

    // MARK: Function libraries

    /// Loads `library` on every connection the client makes from now on, unless the server has it
    /// already. A call to one of its functions on a server that lacks it (a connection made
    /// earlier, a `FUNCTION FLUSH`) loads it then
    /// (``HiredisClientProtocol/call(_:in:keys:arguments:readOnly:)``). A library with a
    /// ``LuaLibrary/revision`` also replaces older revisions of it, once, in the background
    /// (``upgradeInPlace(_:)``).
    public func preload(_ library: LuaLibrary) {
        let added = state.withLockedValue { state in
            if state.libraries.contains(library) { return false }
            state.libraries.append(library)
            return true
        }
        // A compatible revision reaches servers that hold an older one (best effort: a server
        // that cannot be asked now keeps its revision, which serves this client as well).
        if added, library.revision > 0 {
            Task { [weak self] in
                for attempt in 1...5 {
                    do {
                        try await self?.upgradeInPlace(library)
                        return
                    } catch let error as HiredisError where error.code == .clientClosed {
                        return
                    } catch {
                        guard let self, !Task.isCancelled else { return }
                        if attempt == 5 {
                            self.configuration.logger.warning(
                                "function library not upgraded in place; older revisions stay until a restart",
                                metadata: ["library": "\(library.name)", "error": "\(error)"])
                            return
                        }
                        try? await Task.sleep(for: self.configuration.reconnectMaximumDelay.jittered)
                    }
                }
            }
        }
    }

    // MARK: Exclusive connections

    /// Lends a connection to `body` alone, for what cannot share one: `WATCH`/`MULTI` spanning
    /// awaits, blocking pops, `CLIENT` commands about this connection. On a cluster, the
    /// connection goes to the node serving `key` (any node without one).
    ///
    /// The connection returns to a small idle list afterwards, reset first (`RESET` and the
    /// handshake again, one round trip): the next borrower gets it as a new one, whatever this one
    /// left open (`MULTI`, `WATCH`, `SELECT`, another `AUTH` user, `CLIENT REPLY OFF`). It is
    /// closed instead when `body` threw, when it subscribed, or when the reset fails (Redis before
    /// 6.2 has no `RESET`).
    public func withExclusiveConnection<T: Sendable>(
        key: String? = nil, _ body: (HiredisConnection) async throws -> T
    ) async throws -> T {
        let reused: HiredisConnection? = try state.withLockedValue { state in
            if state.closed { throw HiredisError.clientClosed }
            guard key == nil || !backend.isCluster else { return nil }
            while let connection = state.exclusiveIdle.popLast() {
                if connection.isOpen { return connection }
            }
            return nil
        }
        let connection: HiredisConnection
        if let reused {
            connection = reused
        } else {
            connection = try await newConnection(key: key)
        }
        do {
            let result = try await body(connection)
            // The next borrower must not inherit what this one did (an open MULTI, SELECT, another
            // AUTH identity, CLIENT REPLY OFF): the connection is reset before it is kept.
            let mayKeep = state.withLockedValue { state in
                !state.closed && !backend.isCluster && connection.isOpen && state.exclusiveIdle.count < configuration.poolSize
            }
            guard mayKeep, (try? await connection.reset(configuration)) != nil else {
                connection.close()
                return result
            }
            let kept = state.withLockedValue { state in
                guard !state.closed, state.exclusiveIdle.count < configuration.poolSize else { return false }
                state.exclusiveIdle.append(connection)
                return true
            }
            if !kept { connection.close() }
            return result
        } catch {
            connection.close()
            throw error
        }
    }

    private func newConnection(key: String?) async throws -> HiredisConnection {
        let libraries = state.withLockedValue { $0.libraries }
        switch backend {
        case .single:
            return try await HiredisConnection.connect(configuration: configuration, libraries: libraries)
        case .sentinel(_, let discovery):
            return try await discovery.connectToPrimary(libraries: libraries)
        case .cluster(let router):
            return try await router.newConnection(key: key, libraries: libraries)
        }
    }

    // MARK: Cluster-wide

    /// Sends `command` to every primary (to each node once, for a standalone or Sentinel
    /// client): `FUNCTION LOAD`, `CONFIG SET`, `SCAN` over the whole data set. Replies in the
    /// order of ``primaries()``.
    public func sendToEveryPrimary(_ command: RESPCommand) async throws -> [RESPReply] {
        switch backend {
        case .single, .sentinel:
            return [try await send(command)]
        case .cluster(let router):
            return try await router.sendToEveryPrimary(command, timeout: configuration.commandTimeout)
        }
    }

    /// Every key matching `pattern` (every key when nil), as an operator's `redis-cli --scan`
    /// would list them: `SCAN` on every primary (a cluster's keys are spread over its nodes),
    /// `count` keys per step. Keys written or deleted meanwhile may or may not be listed; none
    /// present throughout is missed. For tools and tests: it holds every key in memory. On a
    /// cluster the topology is read first: a primary that joined since the last read (a reshard)
    /// holds keys too.
    public func scanKeys(matching pattern: String? = nil, count: Int = 1000) async throws -> [String] {
        var keys: [String] = []
        await refreshTopology()
        for primary in try await primaries() {
            var cursor = "0"
            repeat {
                var arguments: [RESPArgument] = [.string(cursor)]
                if let pattern { arguments += ["MATCH", .string(pattern)] }
                arguments += ["COUNT", .integer(count)]
                let reply = try await send(RESPCommand("SCAN", arguments: arguments), toPrimary: primary)
                guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let page = parts[1].array else {
                    throw HiredisError.unexpectedReply(expected: "SCAN cursor and keys", got: reply)
                }
                cursor = next
                keys += page.compactMap(\.string)
            } while cursor != "0"
        }
        return keys
    }

    /// The primaries the client talks to, as `host:port`.
    public func primaries() async throws -> [String] {
        switch backend {
        case .single(let pool): return [pool.address]
        case .sentinel(_, let discovery):
            if let known = discovery.currentPrimaryConfiguration() { return [known.address] }
            return [try await discovery.discoverPrimary().description]
        case .cluster(let router): return try await router.primaryAddresses()
        }
    }

    /// Reads a cluster's topology again now and returns once it is applied (nothing to do
    /// outside a cluster: Sentinel discovery follows `+switch-master` itself).
    func refreshTopology() async {
        if case .cluster(let router) = backend { await router.refreshNow() }
    }

    /// The primary serving a hash slot, as `host:port` (the only primary, outside a cluster).
    func primary(forSlot slot: Int) async throws -> String {
        switch backend {
        case .single, .sentinel: return try await primaries()[0]
        case .cluster(let router): return try await router.primary(forSlot: slot)
        }
    }

    /// Sends `command` to the primary `address` (one of ``primaries()``).
    public func send(_ command: RESPCommand, toPrimary address: String) async throws -> RESPReply {
        switch backend {
        case .single, .sentinel: return try await send(command)
        case .cluster(let router): return try await router.send(command, toPrimary: address, timeout: configuration.commandTimeout)
        }
    }

    /// The configuration for a connection of its own to the primary `address` (a subscriber
    /// for that node's keyspace notifications, say).
    public func configuration(forPrimary address: String) -> HiredisConfiguration {
        switch backend {
        case .single: return configuration
        case .sentinel(_, let discovery): return discovery.currentPrimaryConfiguration() ?? configuration
        case .cluster: return configuration.forNode(address)
        }
    }

    /// Whether this client talks to a Redis Cluster.
    public var isCluster: Bool { backend.isCluster }
}

/// Where a client's commands go.
enum Backend: Sendable {
    case single(NodePool)
    case sentinel(NodePool, SentinelDiscovery)
    case cluster(ClusterRouter)

    var isCluster: Bool {
        if case .cluster = self { return true }
        return false
    }
}

extension RESPReply {
    /// Whether this is a replica's refusal of a write (`READONLY`).
    var isReadOnlyRefusal: Bool {
        if case .error(let text) = self { return text.hasPrefix("READONLY") }
        return false
    }
}
