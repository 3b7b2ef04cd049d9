import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Sends commands to the primary serving their slot, with one automatically pipelined pool per
/// primary: the cluster side of ``HiredisClient``.
///
/// The slot map (``ClusterSlotMap``) comes from `CLUSTER SHARDS` (`CLUSTER SLOTS` on older
/// servers), read at start, every ``HiredisConfiguration/topologyRefreshInterval``, after a
/// `MOVED` and after a connection loss. A `MOVED` reply also updates the map at once and the
/// command is sent again to the new node; an `ASK` reply sends `ASKING` plus the command to the
/// target without touching the map. A command follows at most
/// ``HiredisConfiguration/maximumRedirections`` redirections. The pools' connect and back-off
/// work, and the refreshes, run in ``run()``.
///
/// With ``HiredisConfiguration/readFromReplicas``, single read-only commands go to a connected
/// replica of their slot's shard instead, falling back to the primary.
final class ClusterRouter: Sendable {
    private struct State {
        var map = ClusterSlotMap()
        var pools: [String: NodePool] = [:]
        /// With ``HiredisConfiguration/readFromReplicas``: pools of `READONLY` connections to
        /// replicas, by address.
        var replicaPools: [String: NodePool] = [:]
        /// Turns over the replicas of a shard.
        var nextReplica = 0
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiter: UInt64 = 0
        var lastError: HiredisError?
        var shutDown = false
        var running = false
        /// The topology refresh under way: every refresh goes through it, one at a time, so that
        /// an older view read concurrently cannot be applied after a newer one.
        var refreshing: Task<Void, Never>?
        /// When a replica is seen not online yet: the wait before looking again, doubled each
        /// time it still is not (a replica that never comes back is not asked about every second).
        var replicaRecheck = ClusterRouter.firstReplicaRecheck
        /// Whether a look again is scheduled: one at a time, however many refreshes ran.
        var replicaRecheckScheduled = false
    }

    /// The least time between two refreshes that requests (`MOVED`, lost connections, the timer)
    /// ask for: a storm of them during a reshard or a failover makes a few reads, not hundreds.
    static let refreshSpacing: Duration = .milliseconds(250)
    static let firstReplicaRecheck: Duration = .seconds(1)

    private let seeds: [HiredisAddress]
    let configuration: HiredisConfiguration
    private let metrics: ClientMetrics
    private let libraries: @Sendable () -> [LuaLibrary]
    /// The event loops of every node pool's slots (the client's).
    private let eventLoops: [any EventLoop]
    private let state = NIOLockedValueBox(State())
    /// Pools made since `run()` started them: `run()` runs each.
    private let newPools: AsyncStream<NodePool>
    private let newPoolsContinuation: AsyncStream<NodePool>.Continuation
    /// Refresh requests; the newest one is enough.
    private let refreshes: AsyncStream<Void>
    private let refreshesContinuation: AsyncStream<Void>.Continuation

    init(
        seeds: [HiredisAddress], configuration: HiredisConfiguration, metrics: ClientMetrics, eventLoops: [any EventLoop],
        libraries: @escaping @Sendable () -> [LuaLibrary]
    ) {
        self.seeds = seeds
        self.eventLoops = eventLoops
        self.configuration = configuration
        self.metrics = metrics
        self.libraries = libraries
        (newPools, newPoolsContinuation) = AsyncStream.makeStream(of: NodePool.self)
        (refreshes, refreshesContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    private var logger: Logger { configuration.logger }

    // MARK: Running

    func run() async {
        state.withLockedValue { $0.running = true }
        refreshesContinuation.yield()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in self.refreshes.cancelOnGracefulShutdown() {
                    await self.refreshOnce()
                    // Requests meanwhile wait in the stream's buffer as one.
                    try? await Task.sleep(for: Self.refreshSpacing)
                }
                // Graceful shutdown, cancellation or shutDown(): everything stops.
                self.shutDown()
            }
            group.addTask {
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: self.configuration.topologyRefreshInterval.jittered)
                    self.requestRefresh()
                }
            }
            // Ends when shutDown() finishes the stream (or the task is cancelled).
            for await pool in newPools {
                group.addTask { await pool.run() }
            }
            shutDown()
            group.cancelAll()
        }
    }

    func shutDown() {
        let (pools, waiters) = state.withLockedValue { state in
            state.shutDown = true
            defer {
                state.pools = [:]
                state.replicaPools = [:]
                state.waiters = [:]
            }
            return (Array(state.pools.values) + Array(state.replicaPools.values), Array(state.waiters.values))
        }
        for pool in pools { pool.shutDown() }
        for waiter in waiters { waiter.resume(throwing: HiredisError.clientClosed) }
        newPoolsContinuation.finish()
        refreshesContinuation.finish()
    }

    func requestRefresh() {
        refreshesContinuation.yield()
    }

    /// Reads the topology now (or waits for the read under way) and returns once it is applied.
    func refreshNow() async {
        if state.withLockedValue({ $0.shutDown }) { return }
        await refreshOnce()
    }

    /// For a redirection: runs a refresh (or joins the one under way) and waits for it until
    /// `deadline` at most, or until the caller is cancelled; the refresh goes on without the
    /// caller after that, so no caller waits past its own deadline for a read that meets
    /// black-holed nodes. (Concurrent redirections share one read.)
    private func refreshForRedirection(until deadline: ContinuousClock.Instant) async {
        let left = deadline - .now
        guard left > .zero, let loop = eventLoops.first else {
            requestRefresh()
            return
        }
        struct Waiting {
            var continuation: CheckedContinuation<Void, Never>?
            var timer: Scheduled<Void>?
            var done = false
        }
        let waiting = NIOLockedValueBox(Waiting())
        let resume: @Sendable () -> Void = {
            let (continuation, timer) = waiting.withLockedValue { state in
                defer { (state.continuation, state.timer, state.done) = (nil, nil, true) }
                return (state.continuation, state.timer)
            }
            timer?.cancel()
            continuation?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let done = waiting.withLockedValue { state in
                    state.continuation = continuation
                    return state.done
                }
                if done || Task.isCancelled { return resume() }
                let timer = loop.scheduleTask(in: left.timeAmount) { resume() }
                let late = waiting.withLockedValue { state in
                    if !state.done { state.timer = timer }
                    return state.done
                }
                if late { timer.cancel() }
                Task {
                    await self.refreshOnce()
                    resume()
                }
            }
        } onCancel: {
            resume()
        }
    }

    /// Runs a refresh, or waits for the one under way.
    private func refreshOnce() async {
        let task = state.withLockedValue { state -> Task<Void, Never> in
            if let running = state.refreshing { return running }
            let task = Task {
                await self.refresh()
                self.state.withLockedValue { $0.refreshing = nil }
            }
            state.refreshing = task
            return task
        }
        await task.value
    }

    /// Reads the topology from a known primary or a seed, on a connection of its own, and
    /// applies it. Only through ``refreshOnce()``. The primaries are asked in a random order, then
    /// the seeds: a node with a stale view, or one that does not answer, is not asked first every
    /// time.
    private func refresh() async {
        let candidates = state.withLockedValue { $0.map.primaries }.shuffled() + seeds.map(\.description).shuffled()
        var lastError: HiredisError?
        for address in orderedUnique(candidates) {
            do {
                let topology = try await readTopology(from: address)
                guard !topology.shards.isEmpty else { continue }
                apply(topology)
                return
            } catch let error as HiredisError {
                lastError = error
            } catch {
                lastError = .connectionLost(reason: "\(error)")
            }
        }
        let error = lastError ?? .cannotConnect(address: "cluster", reason: "no node answered")
        logger.warning("cluster topology refresh failed", metadata: ["error": "\(error)"])
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, any Error>] in
            state.lastError = error
            guard !state.map.isKnown else { return [] }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(throwing: error) }
        // Try again soon while nothing is known.
        if !state.withLockedValue({ $0.map.isKnown }) {
            try? await Task.sleep(for: configuration.reconnectMaximumDelay.jittered)
            requestRefresh()
        }
    }

    private func readTopology(from address: String) async throws -> ClusterTopology {
        let connection = try await HiredisConnection.connect(configuration: configuration.forNode(address))
        defer { connection.close() }
        let host = HiredisAddress(parsing: Substring(address), defaultPort: 6379)?.host ?? "127.0.0.1"
        do {
            let reply = try await connection.send(RESPCommand("CLUSTER", "SHARDS"))
            return try ClusterTopology(shardsReply: reply, fallbackHost: host, usesTLS: configuration.tls != nil)
        } catch let error as HiredisError where error.code == .server {
            let reply = try await connection.send(RESPCommand("CLUSTER", "SLOTS"))
            return try ClusterTopology(slotsReply: reply, fallbackHost: host)
        }
    }

    private func apply(_ topology: ClusterTopology) {
        let (added, removed, waiters) = state.withLockedValue { state in
            // A refresh that ends after shutDown() makes no pools (nothing would run them).
            if state.shutDown { return ([NodePool](), [NodePool](), [CheckedContinuation<Void, any Error>]()) }
            let (added, _) = state.map.apply(topology)
            var made: [NodePool] = []
            for address in added where state.pools[address] == nil {
                let pool = makePool(address)
                state.pools[address] = pool
                made.append(pool)
            }
            // Every pool of a node the map no longer names as a primary goes: the ones that left, and
            // any other (a node an ASK pointed to that left since).
            var dropped: [NodePool] = []
            let primaries = Set(state.map.primaries)
            for address in state.pools.keys where !primaries.contains(address) {
                if let pool = state.pools.removeValue(forKey: address) { dropped.append(pool) }
            }
            if configuration.readFromReplicas {
                let replicas = state.map.replicaAddresses
                for address in replicas where state.replicaPools[address] == nil {
                    let pool = makePool(address, readOnlyReplica: true)
                    state.replicaPools[address] = pool
                    made.append(pool)
                }
                for address in state.replicaPools.keys where !replicas.contains(address) {
                    if let pool = state.replicaPools.removeValue(forKey: address) { dropped.append(pool) }
                }
            }
            state.lastError = nil
            defer { state.waiters = [:] }
            return (made, dropped, Array(state.waiters.values))
        }
        if !added.isEmpty || !removed.isEmpty {
            logger.info(
                "cluster topology changed",
                metadata: [
                    "primaries": "\(topology.primaries)", "added": "\(added.map(\.address))", "removed": "\(removed.map(\.address))",
                ])
        }
        for pool in added { newPoolsContinuation.yield(pool) }
        // Commands still waiting for one of their connections never went out: they fail with a
        // retryable error, and the client's retry loop sends them on the new map. Those in flight
        // get the node's answer (a MOVED is followed) before its connections close.
        for pool in removed {
            pool.retire(failingWith: .cannotConnect(address: pool.address, reason: "the node left the cluster topology"))
        }
        // Replicas still syncing are looked at again soon when reads could use them, less and
        // less often while they stay down (up to the refresh interval).
        if configuration.readFromReplicas {
            let syncing = topology.shards.contains { $0.replicas.contains { !$0.isOnline } }
            let delay = state.withLockedValue { state -> Duration? in
                guard syncing else {
                    state.replicaRecheck = Self.firstReplicaRecheck
                    return nil
                }
                guard !state.replicaRecheckScheduled else { return nil }
                state.replicaRecheckScheduled = true
                defer { state.replicaRecheck = min(state.replicaRecheck * 2, configuration.topologyRefreshInterval) }
                return state.replicaRecheck
            }
            if let delay {
                configuration.eventLoopGroup.any().scheduleTask(in: delay.timeAmount) { [weak self] in
                    self?.state.withLockedValue { $0.replicaRecheckScheduled = false }
                    self?.requestRefresh()
                }
            }
        }
        for waiter in waiters { waiter.resume() }
    }

    private func makePool(_ address: String, readOnlyReplica: Bool = false) -> NodePool {
        let configuration = {
            var configuration = self.configuration.forNode(address)
            configuration.isReadOnlyReplica = readOnlyReplica
            return configuration
        }()
        let libraries = self.libraries
        return NodePool(address: address, configuration: configuration, metrics: metrics, eventLoops: eventLoops) {
            (eventLoop) async throws(HiredisError) -> HiredisConnection in
            try await HiredisConnection.connect(configuration: configuration, libraries: libraries(), eventLoop: eventLoop)
        }
    }

    /// The pool of `address`, made (and handed to `run()`) when new.
    func pool(_ address: String) throws -> NodePool {
        let (pool, isNew): (NodePool, Bool) = try state.withLockedValue { state in
            if state.shutDown { throw HiredisError.clientClosed }
            if let pool = state.pools[address] { return (pool, false) }
            let pool = makePool(address)
            state.pools[address] = pool
            return (pool, true)
        }
        if isNew { newPoolsContinuation.yield(pool) }
        return pool
    }

    // MARK: Routing

    /// Waits until a topology is known: at most the connect timeout plus the longest back-off, or
    /// until the caller's `deadline` if that comes first; a cancelled caller stops waiting at once.
    private func awaitTopology(deadline: ContinuousClock.Instant? = nil) async throws {
        if state.withLockedValue({ $0.map.isKnown }) { return }
        let id = state.withLockedValue { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let (limit, expiry) = configuration.waitLimit(deadline: deadline)
        let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
        defer { timer.withLockedValue { $0?.cancel() } }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resume: Result<Void, any Error>? = state.withLockedValue { state in
                    if state.shutDown { return .failure(HiredisError.clientClosed) }
                    if state.map.isKnown { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let resume {
                    continuation.resume(with: resume)
                    return
                }
                // Scheduled once the waiter is registered: a timer that fired before would find
                // nobody, and the waiter would have no time limit.
                let scheduled = configuration.eventLoopGroup.any().scheduleTask(in: limit.timeAmount) { [weak self, expiry] in
                    guard let self else { return }
                    let (waiter, running, lastError) = self.state.withLockedValue {
                        ($0.waiters.removeValue(forKey: id), $0.running, $0.lastError)
                    }
                    let reason = running ? "no cluster node answered" : "the client is not running: add it to a ServiceGroup or call run()"
                    waiter?.resume(throwing: expiry ?? lastError ?? HiredisError.cannotConnect(address: "cluster", reason: reason))
                }
                timer.withLockedValue { $0 = scheduled }
            }
        } onCancel: {
            state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// The primary serving `slot` (any primary when nil).
    func primary(forSlot slot: Int?, deadline: ContinuousClock.Instant? = nil) async throws -> String {
        try await awaitTopology(deadline: deadline)
        return try state.withLockedValue { state in
            if let slot, let address = state.map.primary(forSlot: slot) { return address }
            if let any = state.map.primaries.randomElement() { return any }
            throw HiredisError.cannotConnect(address: "cluster", reason: "no primary serves slot \(slot.map(String.init) ?? "-")")
        }
    }

    func primaryAddresses() async throws -> [String] {
        try await awaitTopology()
        return state.withLockedValue { $0.map.primaries }
    }

    /// A connected replica of `slot`'s shard, the shard's replicas taken in turn; nil when none is
    /// connected now (the primary serves the read rather than waiting for a connection).
    private func connectedReplica(forSlot slot: Int) -> (String, HiredisConnection)? {
        let candidates: [(String, NodePool)] = state.withLockedValue { state in
            let replicas = state.map.replicas(forSlot: slot)
            guard !replicas.isEmpty else { return [] }
            state.nextReplica &+= 1
            let start = state.nextReplica % replicas.count
            return (0..<replicas.count).compactMap { offset in
                let address = replicas[(start + offset) % replicas.count]
                return state.replicaPools[address].map { (address, $0) }
            }
        }
        for (address, pool) in candidates {
            if let connection = pool.openConnections.first(where: \.isOpen) { return (address, connection) }
        }
        return nil
    }

    /// A read-only command sent to a replica; nil when the primary must serve it (no replica
    /// connected, the replica failed, or it no longer serves the slot: a `MOVED` reply).
    private func sendToReplica(_ command: RESPCommand, timeout: Duration, deadline: ContinuousClock.Instant) async throws -> RESPReply? {
        guard configuration.readFromReplicas, command.isReadOnly, let slot = command.slot else { return nil }
        try await awaitTopology(deadline: deadline)
        guard let (address, connection) = connectedReplica(forSlot: slot) else { return nil }
        do {
            return try await connection.send(command, timeout: timeout)
        } catch let error as HiredisError {
            switch error.code {
            case .connectionLost, .cannotConnect:
                requestRefresh()
                return nil
            case .server where redirection(error, from: address) != nil || (error.serverError?.isTransient ?? false):
                requestRefresh()
                return nil
            default:
                throw error
            }
        }
    }

    /// One command, following redirections. `timeout` bounds the whole call: the waits for a
    /// topology and for a connection, and every hop, share it.
    func send(_ command: RESPCommand, timeout: Duration) async throws -> RESPReply {
        let deadline = ContinuousClock.now + timeout
        func left() throws(HiredisError) -> Duration { try Self.left(until: deadline, of: timeout) }
        if let reply = try await sendToReplica(command, timeout: try left(), deadline: deadline) { return reply }
        var address = try await primary(forSlot: command.slot, deadline: deadline)
        var asking = false
        for _ in 0...configuration.maximumRedirections {
            do {
                let connection = try await pool(address).connection(deadline: deadline)
                if asking {
                    let replies = try await connection.pipeline([RESPCommand("ASKING"), command], timeout: try left())
                    if case .error(let text) = replies.last { throw HiredisError.server(HiredisServerError(reply: text)) }
                    return replies.last ?? .null
                }
                return try await connection.send(command, timeout: try left())
            } catch let error as HiredisError {
                if let redirection = redirection(error, from: address) {
                    if redirection.kind == .ask, command.runsScript { throw HiredisError.server(Self.scriptWaitsForItsSlot) }
                    (asking, address) = try await follow(redirection, from: address, deadline: deadline)
                    continue
                }
                if error.code == .connectionLost || error.code == .cannotConnect { requestRefresh() }
                throw error
            }
        }
        throw HiredisError.tooManyRedirections(configuration.maximumRedirections)
    }

    /// The time left before `deadline` for the next step of a call of `timeout`; none left is a
    /// timeout of a command not written there.
    static func left(until deadline: ContinuousClock.Instant, of timeout: Duration) throws(HiredisError) -> Duration {
        let left = deadline - .now
        guard left > .zero else { throw .timedOut(after: timeout, written: false) }
        return left
    }

    /// The refusal a script or function gets in place of following an `ASK`: a passing one
    /// (`TRYAGAIN`), retried until the slot's migration ends. While a slot migrates its keys are
    /// split between the two nodes, and the importing node, asked, serves a read of a key it has
    /// not received yet as a missing key: a function that reads keys it did not declare (the
    /// store's derive them from their first key) would take a live session for an ended one. On
    /// the migrating node such a read fails the script instead ("non local key").
    static let scriptWaitsForItsSlot = HiredisServerError(
        reply: "TRYAGAIN the slot is migrating: a script waits for it rather than run where some of its keys may not be yet")

    /// The redirection an error reply names, if any.
    func redirection(_ error: HiredisError, from address: String) -> Redirection? {
        guard let reply = error.serverError else { return nil }
        let host = HiredisAddress(parsing: Substring(address), defaultPort: 6379)?.host ?? "127.0.0.1"
        return Redirection(reply, fallbackHost: host)
    }

    /// Records a redirection; returns where the next try goes and whether it must be preceded by
    /// `ASKING`. A target the topology does not name gets no connection (and so no credentials):
    /// the topology is read again from a known node first, and the redirection is refused if it
    /// still does not name it (``HiredisError/Code/untrustedRedirection``); a node that joined is
    /// named by then. An unknown endpoint (`?:port`, a node that prefers hostnames and has none)
    /// is the one node the topology names with that port; failing that, for a `MOVED`, where the
    /// topology, read again, says the slot lives. A target that is the node that answered
    /// (`replying`) is not followed: the redirection is refused, to be tried again once a refresh
    /// (asked for) has a newer map.
    /// The caller waits for a read of the topology only until `deadline` (its own).
    func follow(
        _ redirection: Redirection, from replying: String, deadline: ContinuousClock.Instant
    ) async throws(HiredisError) -> (asking: Bool, address: String) {
        metrics.redirections.increment()
        var target = redirection.address ?? uniqueNode(withPort: redirection.port)
        if target == nil, redirection.kind == .moved {
            await refreshForRedirection(until: deadline)
            target = state.withLockedValue { $0.map.primary(forSlot: redirection.slot) }
            if target == replying {
                requestRefresh()
                target = nil
            }
        } else if let address = target, !isNamed(address) {
            await refreshForRedirection(until: deadline)
            if !isNamed(address) { target = nil }
        }
        guard let target else {
            logger.warning(
                "redirection to a node the cluster topology does not name; refused", metadata: ["slot": "\(redirection.slot)"])
            throw .untrustedRedirection
        }
        switch redirection.kind {
        case .moved:
            _ = state.withLockedValue { $0.map.moved(slot: redirection.slot, to: target) }
            requestRefresh()
            return (false, target)
        case .ask:
            return (true, target)
        }
    }

    /// The one node the topology names with `port`, if exactly one.
    private func uniqueNode(withPort port: Int) -> String? {
        let named = state.withLockedValue { Set($0.map.primaries).union($0.map.replicaAddresses) }
        let matching = named.filter { HiredisAddress(parsing: Substring($0), defaultPort: 6379)?.port == port }
        return matching.count == 1 ? matching.first : nil
    }

    /// Whether the topology names `address` as a primary or a replica.
    private func isNamed(_ address: String) -> Bool {
        state.withLockedValue { $0.map.primaries.contains(address) || $0.map.replicaAddresses.contains(address) }
    }

    /// An explicit pipeline split by node: a command without a key goes with the command before
    /// it (or, at the start, the first keyed one), so `[SET k v, TIME]` stays on `k`'s node. The
    /// parts go out concurrently; a redirected command goes again with the reads that describe it.
    func pipeline(_ commands: [RESPCommand], timeout: Duration) async throws -> [RESPReply] {
        let deadline = ContinuousClock.now + timeout
        try await awaitTopology(deadline: deadline)
        // Segments: each keyed command starts one; commands without a key join the segment they
        // follow (leading ones join the first keyed command's).
        var segments: [(slot: Int?, range: Range<Int>)] = []
        var currentStart = 0
        var currentSlot: Int? = nil
        for (index, command) in commands.enumerated() {
            guard let slot = command.slot else { continue }
            if currentSlot == nil {
                currentSlot = slot
                continue
            }
            segments.append((currentSlot, currentStart..<index))
            currentStart = index
            currentSlot = slot
        }
        segments.append((currentSlot, currentStart..<commands.count))
        var byNode: [String: [Int]] = [:]
        var nodeOrder: [String] = []
        try state.withLockedValue { state in
            for (index, segment) in segments.enumerated() {
                let address = segment.slot.flatMap { state.map.primary(forSlot: $0) } ?? state.map.primaries.first
                guard let address else { throw HiredisError.cannotConnect(address: "cluster", reason: "no primary known") }
                if byNode[address] == nil { nodeOrder.append(address) }
                byNode[address, default: []].append(index)
            }
        }
        var replies = [RESPReply](repeating: .null, count: commands.count)
        do {
            try await withThrowingTaskGroup(of: (String, [RESPReply]).self) { group in
                for address in nodeOrder {
                    let indexes = byNode[address]!.flatMap { Array(segments[$0].range) }
                    let part = indexes.map { commands[$0] }
                    group.addTask {
                        let connection = try await self.pool(address).connection(deadline: deadline)
                        return (address, try await connection.pipeline(part, timeout: try Self.left(until: deadline, of: timeout)))
                    }
                }
                for try await (address, partReplies) in group {
                    let indexes = byNode[address]!.flatMap { Array(segments[$0].range) }
                    for (position, index) in indexes.enumerated() { replies[index] = partReplies[position] }
                }
            }
        } catch let error as HiredisError {
            if error.code == .connectionLost || error.code == .cannotConnect { requestRefresh() }
            // Other parts went out: the pipeline as a whole may have partly run.
            throw nodeOrder.count > 1 ? error.mayHaveRun() : error
        }
        // A segment whose keyed command was redirected did not run there: it goes again as a unit,
        // the command with the commands that describe it (`WAIT`, `TIME`: they must come from the
        // node that ran it). Everything from here on follows a first pass that ran: a failure
        // leaves the pipeline partly run, never to be sent again whole.
        do {
            // Plain redirections first, then the scripts that wait for their slot: a wait may use
            // up the time left, and must not starve a redirection that is ready now.
            var waiting: [(keyed: Int, members: [Int])] = []
            for (segmentIndex, segment) in segments.enumerated() {
                guard let keyed = segment.range.first(where: { commands[$0].slot != nil }), case .error(let text) = replies[keyed],
                    let address = byNode.first(where: { $0.value.contains(segmentIndex) })?.key
                else { continue }
                let redirection = redirection(.server(HiredisServerError(reply: text)), from: address)
                let members = segment.range.filter { $0 == keyed || (commands[$0].slot == nil && commands[$0].describesTheCommandBefore) }
                if waitsForItsSlot(commands[keyed], replied: text) || (redirection?.kind == .ask && commands[keyed].runsScript) {
                    // Not sent to the importing node (see scriptWaitsForItsSlot), nor run while
                    // its slot migrates: again once the slot is settled, so that the parts of the
                    // pipeline that ran keep their replies and this one runs too.
                    waiting.append((keyed, members))
                } else if let redirection {
                    let again = try await sendGroup(
                        members.map { commands[$0] }, keyed: members.firstIndex(of: keyed)!, redirection: redirection, from: address,
                        deadline: deadline, of: timeout)
                    for (index, reply) in zip(members, again) { replies[index] = reply }
                }
            }
            for (keyed, members) in waiting {
                let again = try await sendScriptGroupWhenSettled(
                    members.map { commands[$0] }, keyed: members.firstIndex(of: keyed)!, replies: members.map { replies[$0] },
                    deadline: deadline, of: timeout)
                for (index, reply) in zip(members, again) { replies[index] = reply }
            }
        } catch let error as HiredisError {
            if error.code == .connectionLost || error.code == .cannotConnect { requestRefresh() }
            throw error.mayHaveRun()
        }
        return replies
    }

    func sendToEveryPrimary(_ command: RESPCommand, timeout: Duration) async throws -> [RESPReply] {
        let primaries = try await primaryAddresses()
        return try await withThrowingTaskGroup(of: (Int, RESPReply).self) { group in
            for (index, address) in primaries.enumerated() {
                group.addTask { (index, try await self.send(command, toPrimary: address, timeout: timeout)) }
            }
            var replies = [RESPReply](repeating: .null, count: primaries.count)
            for try await (index, reply) in group { replies[index] = reply }
            return replies
        }
    }

    func send(_ command: RESPCommand, toPrimary address: String, timeout: Duration) async throws -> RESPReply {
        let deadline = ContinuousClock.now + timeout
        try await awaitTopology(deadline: deadline)
        do {
            let connection = try await pool(address).connection(deadline: deadline)
            return try await connection.send(command, timeout: try Self.left(until: deadline, of: timeout))
        } catch let error as HiredisError where error.code == .connectionLost || error.code == .cannotConnect {
            requestRefresh()
            throw error
        }
    }

    func newConnection(key: String?, libraries: [LuaLibrary]) async throws -> HiredisConnection {
        let address = try await primary(forSlot: key.map { HashSlot.of($0) })
        return try await HiredisConnection.connect(configuration: configuration.forNode(address), libraries: libraries)
    }

    private func orderedUnique(_ items: [String]) -> [String] {
        var seen = Set<String>()
        return items.filter { seen.insert($0).inserted }
    }
}
