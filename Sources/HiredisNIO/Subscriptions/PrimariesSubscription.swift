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
/// When a primary appears or goes (failover, resharding) or a shard channel moves, the consumer
/// gets ``HiredisSubscriber/Event/resubscribed``: messages may have been missed meanwhile.
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
    }

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
            var announce = false
            while !Task.isCancelled, !state.withLockedValue({ $0.closed }) {
                if await reconcile(client, wanted: wanted, group: &group), announce { deliver(.resubscribed) }
                announce = true
                await waitForChange(atMost: configuration.topologyRefreshInterval)
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
        let waiting = state.withLockedValue { state in
            state.closed = true
            defer { state.waiting = nil }
            return state.waiting
        }
        waiting?.resume()
    }

    /// The subscriptions changed: place them now (when running), waiting for the nodes'
    /// confirmations.
    func apply(_ wanted: Wanted) async throws {
        guard let client = state.withLockedValue({ $0.client }) else { return }
        let plan = try await placement(client, wanted: wanted)
        try await carryOut(plan)
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
    private func carryOut(_ plan: [String: Wanted]) async throws {
        var changes: [(HiredisSubscriber, Kind, Set<String>)] = []
        state.withLockedValue { state in
            for (address, wanted) in plan {
                guard var placement = state.nodes[address] else { continue }
                func diff(_ have: Set<String>, _ want: Set<String>, add: Kind, remove: Kind) {
                    if !want.subtracting(have).isEmpty { changes.append((placement.subscriber, add, want.subtracting(have))) }
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
    }

    /// Starts subscribers for new primaries, closes those of nodes that are no longer primaries,
    /// and places every subscription. Returns whether anything moved.
    private func reconcile(_ client: HiredisClient, wanted: @escaping @Sendable () -> Wanted, group: inout TaskGroup<Void>) async -> Bool {
        let plan: [String: Wanted]
        do {
            plan = try await placement(client, wanted: wanted())
        } catch {
            configuration.logger.debug("subscriber cannot read the topology", metadata: ["error": "\(error)"])
            return false
        }
        let (added, removed) = state.withLockedValue { state -> ([(String, HiredisSubscriber)], [HiredisSubscriber]) in
            var added: [(String, HiredisSubscriber)] = []
            for address in plan.keys where state.nodes[address] == nil {
                var node = configuration.forNode(address)
                node.topology = .standalone
                let subscriber = HiredisSubscriber(configuration: node, bufferSize: bufferSize)
                state.nodes[address] = Placement(subscriber: subscriber)
                added.append((address, subscriber))
            }
            let gone = state.nodes.keys.filter { plan[$0] == nil }
            let removed = gone.compactMap { state.nodes.removeValue(forKey: $0)?.subscriber }
            return (added, removed)
        }
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
        // Confirmations are awaited in the background: a node that is down must not hold up the
        // others (its subscriber subscribes when it connects). The plan is made again from what is
        // wanted now: a subscription added while this one read the topology found none of the new
        // nodes to place itself on (carryOut skips unknown nodes), and would otherwise wait for the
        // next refresh.
        group.addTask {
            guard let current = try? await self.placement(client, wanted: wanted()) else { return }
            try? await self.carryOut(current)
        }
        return !added.isEmpty || !removed.isEmpty
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
