import NIOConcurrencyHelpers
import NIOCore

/// The subscriptions of a ``HiredisSubscriber`` whose Redis has several primaries (a cluster) or
/// a primary that changes (Sentinel): one single-node subscriber per primary, placed as the
/// messages require, and moved when the topology changes.
///
/// - Patterns (keyspace notifications: a node publishes only its own keys' events) go to every
///   primary.
/// - Shard channels go to the primary serving their slot (`SPUBLISH` stays on that shard).
/// - Plain channels go to one primary (`PUBLISH` reaches every node of a cluster).
///
/// The topology is looked at again every ``HiredisConfiguration/topologyRefreshInterval``, and at
/// once when a node subscriber loses its connection or a node hands shard channels back (their
/// slot migrated: an unasked `sunsubscribe`, or `MOVED` to `SSUBSCRIBE`); while a node subscriber
/// stays disconnected or a placement is not confirmed, again after 1, 2, 4 … s (a failover
/// takes a few seconds to promote a replica). When a primary appears or goes, or a shard channel
/// moves, the consumer gets ``HiredisSubscriber/Event/resubscribed`` once every subscription is
/// confirmed in its new place: whatever it does to catch up cannot miss a later message.
final class PrimariesSubscription: Sendable {
    typealias Kind = HiredisSubscriber.Kind

    /// What one node subscriber has been asked to hold.
    private struct Placement: Sendable {
        let subscriber: HiredisSubscriber
        var channels: Set<String> = []
        var patterns: Set<String> = []
        var shardChannels: Set<String> = []
    }

    private struct State: Sendable {
        var client: HiredisClient?
        var nodes: [String: Placement] = [:]
        var closed = false
        var waiting: CheckedContinuation<Void, Never>?
        var pendingSignal = false
        /// Shard channels a node handed back, to be placed again (and announced).
        var displaced: Set<String> = []
        /// A node subscriber saw a change: read the topology again before placing.
        var refreshWanted = false
        /// How many placements made their node subscribers (0: none yet, nothing can be placed).
        var placements: UInt64 = 0
        var placementWaiters: [UInt64: (after: UInt64, continuation: CheckedContinuation<Void, any Error>)] = [:]
        var nextPlacementWaiter: UInt64 = 0
    }

    /// The first wait before looking again while the subscriptions are unsettled.
    static let firstRecheck: Duration = .seconds(1)

    private let configuration: HiredisConfiguration
    private let bufferSize: Int
    private let deliver: @Sendable (HiredisSubscriber.Event) -> Void
    private let state = NIOLockedValueBox(State())

    init(configuration: HiredisConfiguration, bufferSize: Int, deliver: @escaping @Sendable (HiredisSubscriber.Event) -> Void) {
        self.configuration = configuration
        self.bufferSize = bufferSize
        self.deliver = deliver
    }

    /// Follows the primaries until closed or cancelled: `wanted` gives the subscriptions to hold.
    func run(wanted: @escaping @Sendable () -> Wanted) async throws {
        var topology = configuration
        topology.poolSize = 1
        if let name = topology.clientName { topology.clientName = name + "-topology" }
        let client = try HiredisClient(configuration: topology)
        let closed = state.withLockedValue { state in
            state.client = client
            return state.closed
        }
        if closed { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await client.run() }
            var first = true
            var noticeOwed = false
            var recheck = Self.firstRecheck
            var lastRefresh: ContinuousClock.Instant?
            while !Task.isCancelled, !state.withLockedValue({ $0.closed }) {
                if state.withLockedValue({ state in
                    defer { state.refreshWanted = false }
                    return state.refreshWanted
                }) {
                    if let lastRefresh, case let wait = ClusterRouter.refreshSpacing - (ContinuousClock.now - lastRefresh), wait > .zero {
                        try? await Task.sleep(for: wait)
                    }
                    await client.refreshTopology()
                    lastRefresh = .now
                }
                let outcome = await reconcile(client, wanted: wanted, group: &group)
                if outcome.moved, !first { noticeOwed = true }
                // Every node subscriber connected and holding, confirmed, all it was given: a
                // placement recorded in an earlier round whose confirmation timed out is not.
                let settled = outcome.confirmed && state.withLockedValue { $0.nodes.values.allSatisfy { $0.subscriber.isSettled } }
                if noticeOwed, settled {
                    deliver(.resubscribed)
                    noticeOwed = false
                }
                first = false
                let unsettled = noticeOwed || !settled
                if unsettled {
                    state.withLockedValue { $0.refreshWanted = true }
                    await waitForChange(atMost: recheck)
                    recheck = min(recheck * 2, configuration.topologyRefreshInterval)
                } else {
                    recheck = Self.firstRecheck
                    await waitForChange(atMost: configuration.topologyRefreshInterval)
                }
            }
            let nodes = state.withLockedValue { state in
                defer { state.nodes = [:] }
                return state.nodes.values.map(\.subscriber)
            }
            for node in nodes { await node.close() }
            await client.close()
            group.cancelAll()
        }
    }

    /// Stops following; ``run(wanted:)`` returns.
    func close() {
        let (waiting, placementWaiters) = state.withLockedValue { state in
            state.closed = true
            defer {
                state.waiting = nil
                state.placementWaiters = [:]
            }
            return (state.waiting, state.placementWaiters.values.map(\.continuation))
        }
        waiting?.resume()
        for waiter in placementWaiters { waiter.resume(throwing: HiredisError.clientClosed) }
    }

    /// The subscriptions changed: place them now (when running), waiting for the nodes'
    /// confirmations.
    func apply(_ wanted: Wanted, confirming kind: Kind, _ names: Set<String>) async throws {
        // Before the first placement there are no node subscribers to hand them to: it places
        // them (the facade holds them), and this waits for it, as a single node's subscriber
        // waits for its connection.
        try await awaitPlacement(after: 0)
        guard let client = state.withLockedValue({ $0.client }) else { return }
        var redirections = 0
        while true {
            do {
                let placements = state.withLockedValue { $0.placements }
                if try await carryOut(try await placement(client, wanted: wanted), confirming: (kind, names)) { return }
                // The plan names a primary the run loop has no subscriber for yet (one that
                // joined): it makes one, then this places them again.
                redirections += 1
                if redirections > configuration.maximumRedirections { throw HiredisError.tooManyRedirections(redirections) }
                state.withLockedValue { $0.refreshWanted = true }
                signal()
                try await awaitPlacement(after: placements)
            } catch is HiredisSubscriber.ShardChannelsMoved {
                // The slot map was older than the node's: read it again and place them anew.
                redirections += 1
                if redirections > configuration.maximumRedirections { throw HiredisError.tooManyRedirections(redirections) }
                await client.refreshTopology()
            }
        }
    }

    /// The subscriptions wanted, as the facade holds them.
    struct Wanted: Sendable {
        var channels: Set<String>
        var patterns: Set<String>
        var shardChannels: Set<String>
    }

    /// Where each subscription belongs: node address → what it should hold.
    private func placement(_ client: HiredisClient, wanted: Wanted) async throws -> [String: Wanted] {
        let primaries = try await client.primaries().sorted()
        var plan: [String: Wanted] = [:]
        for address in primaries { plan[address] = Wanted(channels: [], patterns: wanted.patterns, shardChannels: []) }
        if let home = primaries.first { plan[home]?.channels = wanted.channels }
        for channel in wanted.shardChannels {
            let owner = try await client.primary(forSlot: HashSlot.of(channel))
            plan[owner, default: Wanted(channels: [], patterns: wanted.patterns, shardChannels: [])].shardChannels.insert(channel)
        }
        return plan
    }

    /// Subscribes and unsubscribes on the node subscribers so that each holds what `plan` says.
    /// `confirming`: subscriptions a caller asked for, whose confirmations are awaited also
    /// where they are placed already (a concurrent placement sent them, and its confirmation may
    /// still be on its way): they are sent again, which Redis confirms again.
    /// Returns false when the plan names a node that has no subscriber yet (skipped).
    @discardableResult
    private func carryOut(_ plan: [String: Wanted], confirming: (Kind, Set<String>)? = nil) async throws -> Bool {
        var changes: [(HiredisSubscriber, Kind, Set<String>)] = []
        var complete = true
        state.withLockedValue { state in
            for (address, wanted) in plan {
                guard var placement = state.nodes[address] else {
                    complete = false
                    continue
                }
                func diff(_ have: Set<String>, _ want: Set<String>, add: Kind, remove: Kind) {
                    var added = want.subtracting(have)
                    if let (kind, names) = confirming, kind == add { added.formUnion(names.intersection(want)) }
                    if !added.isEmpty { changes.append((placement.subscriber, add, added)) }
                    if !have.subtracting(want).isEmpty { changes.append((placement.subscriber, remove, have.subtracting(want))) }
                }
                diff(placement.channels, wanted.channels, add: .channel, remove: .unsubscribeChannel)
                diff(placement.patterns, wanted.patterns, add: .pattern, remove: .unsubscribePattern)
                diff(placement.shardChannels, wanted.shardChannels, add: .shardChannel, remove: .unsubscribeShardChannel)
                placement.channels = wanted.channels
                placement.patterns = wanted.patterns
                placement.shardChannels = wanted.shardChannels
                state.nodes[address] = placement
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (subscriber, kind, names) in changes {
                group.addTask { try await subscriber.change(kind, names: Array(names)) }
            }
            try await group.waitForAll()
        }
        return complete
    }

    /// Starts subscribers for new primaries, closes those of nodes that are no longer primaries,
    /// and places every subscription, waiting for the confirmations (each at most the command
    /// timeout). `moved`: a primary came or went, or a shard channel changed nodes; `confirmed`:
    /// every subscription is confirmed where it belongs.
    private func reconcile(
        _ client: HiredisClient, wanted: @escaping @Sendable () -> Wanted, group: inout TaskGroup<Void>
    ) async -> (moved: Bool, confirmed: Bool) {
        let plan: [String: Wanted]
        do {
            plan = try await placement(client, wanted: wanted())
        } catch {
            configuration.logger.debug("subscriber cannot read the topology", metadata: ["error": "\(error)"])
            return (false, false)
        }
        let (added, removed, relocated) = state.withLockedValue {
            state -> ([(String, HiredisSubscriber)], [HiredisSubscriber], Bool) in
            // A shard channel moved when it is placed where it is not held, and it was held
            // elsewhere or handed back by a node.
            // (A handed-back channel that a concurrent subscribe placed meanwhile moved too.)
            var relocated = false
            for (address, wanted) in plan {
                for channel in wanted.shardChannels {
                    if state.displaced.contains(channel) {
                        relocated = true
                    } else if state.nodes[address]?.shardChannels.contains(channel) != true,
                        state.nodes.values.contains(where: { $0.shardChannels.contains(channel) })
                    {
                        relocated = true
                    }
                }
            }
            state.displaced = []
            var added: [(String, HiredisSubscriber)] = []
            for address in plan.keys where state.nodes[address] == nil {
                var node = configuration.forNode(address)
                node.topology = .standalone
                let subscriber = HiredisSubscriber(configuration: node, bufferSize: bufferSize) { [weak self] signal in
                    self?.nodeSignal(signal, from: address)
                }
                state.nodes[address] = Placement(subscriber: subscriber)
                added.append((address, subscriber))
            }
            let gone = state.nodes.keys.filter { plan[$0] == nil }
            let removed = gone.compactMap { state.nodes.removeValue(forKey: $0)?.subscriber }
            return (added, removed, relocated)
        }
        markPlaced()
        for (_, subscriber) in added {
            group.addTask { try? await subscriber.run() }
            group.addTask {
                for await event in subscriber.events {
                    // A node's own reconnect is also a reason to look at the topology again.
                    if case .resubscribed = event { self.signal() }
                    self.deliver(event)
                }
            }
        }
        for subscriber in removed { await subscriber.close() }
        // The plan is made again from what is wanted now: a subscription added while this one
        // read the topology found none of the new nodes to place itself on (carryOut skips
        // unknown nodes).
        var confirmed = true
        do {
            try await carryOut(try await placement(client, wanted: wanted()))
        } catch {
            configuration.logger.debug("subscriptions not confirmed yet", metadata: ["error": "\(error)"])
            confirmed = false
        }
        return (!added.isEmpty || !removed.isEmpty || relocated, confirmed)
    }

    /// Waits until a placement later than the `after`-th made its node subscribers (the first
    /// one, for 0), at most the command timeout.
    private func awaitPlacement(after placements: UInt64) async throws {
        let timeout = configuration.commandTimeout
        let id = state.withLockedValue { state in
            state.nextPlacementWaiter += 1
            return state.nextPlacementWaiter
        }
        let timer = configuration.eventLoopGroup.any().scheduleTask(in: timeout.timeAmount) { [weak self] in
            self?.state.withLockedValue { $0.placementWaiters.removeValue(forKey: id) }?.continuation.resume(
                throwing: HiredisError.timedOut(after: timeout))
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result: Result<Void, any Error>? = state.withLockedValue { state in
                if state.closed { return .failure(HiredisError.clientClosed) }
                if state.placements > placements { return .success(()) }
                state.placementWaiters[id] = (placements, continuation)
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }

    private func markPlaced() {
        let waiters = state.withLockedValue { state in
            state.placements += 1
            let ready = state.placementWaiters.filter { $0.value.after < state.placements }
            for id in ready.keys { state.placementWaiters.removeValue(forKey: id) }
            return ready.values.map(\.continuation)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// A node subscriber lost its connection or handed shard channels back.
    private func nodeSignal(_ signal: HiredisSubscriber.NodeSignal, from address: String) {
        state.withLockedValue { state in
            if case .shardChannelsMoved(let channels) = signal {
                state.nodes[address]?.shardChannels.subtract(channels)
                state.displaced.formUnion(channels)
            }
            state.refreshWanted = true
        }
        self.signal()
    }

    private func signal() {
        let waiting = state.withLockedValue { state in
            defer { state.waiting = nil }
            if state.waiting == nil { state.pendingSignal = true }
            return state.waiting
        }
        waiting?.resume()
    }

    /// Returns after `duration`, a ``signal()``, ``close()`` or cancellation.
    private func waitForChange(atMost duration: Duration) async {
        let timer = configuration.eventLoopGroup.any().scheduleTask(in: duration.timeAmount) { [weak self] in
            self?.signal()
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state in
                    if state.closed || state.pendingSignal {
                        state.pendingSignal = false
                        return true
                    }
                    state.waiting = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            self.signal()
        }
    }
}
