import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A pub/sub subscriber on a connection of its own, delivering messages as an `AsyncSequence`.
///
/// A swift-service-lifecycle `Service`: ``run()`` connects, keeps the connection (reconnecting with
/// capped exponential back-off; an idle connection is checked with `PING`, so one the network
/// dropped silently is found and replaced), and ends on graceful shutdown or cancellation.
/// Channels and patterns can be added and removed while it runs (and before: they are
/// subscribed when it connects). After a reconnect it subscribes to everything again, then yields
/// ``Event/resubscribed``: messages published meanwhile were lost (Redis keeps none for absent
/// subscribers).
///
/// Behind a Redis Cluster or Sentinels (``HiredisConfiguration/topology``) the subscriber keeps one
/// connection per primary and follows failovers and resharding: patterns are subscribed on every
/// primary (keyspace notifications are node-local), shard channels on the primary of their slot,
/// plain channels on one primary; a move yields ``Event/resubscribed``.
///
/// The buffer between the connection and a slow consumer is bounded
/// (``init(configuration:bufferSize:)``): when it is full the oldest message is dropped and
/// ``Event/gap(dropped:)`` is yielded, so the consumer knows to catch up another way.
///
/// ```swift
/// let subscriber = HiredisSubscriber(configuration: configuration)
/// try await withThrowingTaskGroup(of: Void.self) { group in
///     group.addTask { try await subscriber.run() }
///     try await subscriber.subscribe(channels: ["news"])
///     for await event in subscriber.events {
///         if case .message(let channel, _, let payload) = event { print(channel, String(buffer: payload)) }
///     }
/// }
/// ```
public final class HiredisSubscriber: Service {
    /// What the subscriber delivers.
    public enum Event: Sendable {
        /// A message on `channel`; `pattern` is set when it matched a pattern subscription. Messages
        /// of shard channels (`SSUBSCRIBE`) come this way too.
        case message(channel: String, pattern: String?, payload: ByteBuffer)
        /// The connection was lost and is back with every subscription restored: messages
        /// published in between were missed.
        case resubscribed
        /// The consumer fell behind and the buffer overflowed: this many messages were dropped
        /// (the oldest ones) since the subscriber started.
        case gap(dropped: Int)
    }

    enum Kind: String, Sendable {
        case channel = "subscribe"
        case pattern = "psubscribe"
        case shardChannel = "ssubscribe"
        case unsubscribeChannel = "unsubscribe"
        case unsubscribePattern = "punsubscribe"
        case unsubscribeShardChannel = "sunsubscribe"
    }

    private struct Waiter {
        let kind: Kind
        var remaining: Set<String>
        /// Shard channels the node refused with `MOVED`: their slot is served elsewhere.
        var moved: Set<String> = []
        let continuation: CheckedContinuation<Void, any Error>
    }

    /// What a node subscriber tells the ``PrimariesSubscription`` that owns it.
    enum NodeSignal: Sendable {
        /// Its connection was lost: the node may be failing over.
        case disconnected
        /// The node dropped these shard channels, or refused them with `MOVED`: their slot is
        /// served by another node now. They are no longer held here.
        case shardChannelsMoved(Set<String>)
    }

    /// The confirmation of shard channels ended with some of them refused by `MOVED`.
    struct ShardChannelsMoved: Error {
        let channels: Set<String>
    }

    private struct State {
        var channels: Set<String> = []
        var patterns: Set<String> = []
        var shardChannels: Set<String> = []
        var connection: HiredisConnection?
        var waiters: [UInt64: Waiter] = [:]
        var nextWaiter: UInt64 = 0
        var closed = false
        var dropped = 0
        /// Connected, and everything held was confirmed on this connection (see ``isSettled``).
        var settled = false

        /// Takes the names `matched` picks out of each waiter of `kind` off it (as refused by
        /// `MOVED` when `refused`); returns the waiters now done, with the names refused of theirs.
        mutating func settleWaiters(
            _ kind: Kind, refused: Bool = false, matched: (Set<String>) -> Set<String>
        ) -> [(CheckedContinuation<Void, any Error>, Set<String>)] {
            var done: [(CheckedContinuation<Void, any Error>, Set<String>)] = []
            for (id, var waiter) in waiters where waiter.kind == kind {
                let names = matched(waiter.remaining)
                guard !names.isEmpty else { continue }
                waiter.remaining.subtract(names)
                if refused { waiter.moved.formUnion(names) }
                if waiter.remaining.isEmpty {
                    waiters.removeValue(forKey: id)
                    done.append((waiter.continuation, waiter.moved))
                } else {
                    waiters[id] = waiter
                }
            }
            return done
        }
    }

    /// The messages and gap notices, in order. Iterate it from one task.
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let configuration: HiredisConfiguration
    private let state: NIOLockedValueBox<State>
    /// Behind a cluster or Sentinels: the node subscribers that carry the subscriptions.
    private let primaries: PrimariesSubscription?
    /// A node subscriber's line to the ``PrimariesSubscription`` that owns it (nil otherwise).
    private let nodeSignals: (@Sendable (NodeSignal) -> Void)?

    /// A subscriber that buffers at most `bufferSize` events for its consumer. Nothing connects
    /// before ``run()``.
    public convenience init(configuration: HiredisConfiguration, bufferSize: Int = 10_000) {
        self.init(configuration: configuration, bufferSize: bufferSize, nodeSignals: nil)
    }

    /// A subscriber; `nodeSignals` makes it one node's subscriber in a ``PrimariesSubscription``:
    /// shard channels the server moves away are handed back to it instead of being held.
    init(configuration: HiredisConfiguration, bufferSize: Int, nodeSignals: (@Sendable (NodeSignal) -> Void)?) {
        self.nodeSignals = nodeSignals
        var configuration = configuration
        configuration.poolSize = 1
        if let name = configuration.clientName { configuration.clientName = name + "-subscriber" }
        let (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(max(bufferSize, 2)))
        let state = NIOLockedValueBox(State())
        self.events = events
        self.continuation = continuation
        self.state = state
        switch configuration.topology {
        case .standalone:
            primaries = nil
        case .cluster, .sentinel:
            primaries = PrimariesSubscription(configuration: configuration, bufferSize: bufferSize) { event in
                Self.deliver(event, to: continuation, state: state)
            }
        }
        configuration.topology = .standalone
        self.configuration = configuration
    }

    /// Connects and keeps subscribed until graceful shutdown, cancellation or ``close()``; then
    /// ends ``events``.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                if let primaries {
                    try? await primaries.run { [state] in
                        state.withLockedValue {
                            PrimariesSubscription.Wanted(channels: $0.channels, patterns: $0.patterns, shardChannels: $0.shardChannels)
                        }
                    }
                } else {
                    await supervise()
                }
            } onCancel: {
                self.stop()
            }
        } onGracefulShutdown: {
            self.stop()
        }
        stop()
    }

    /// Hands an event to the consumer; when the buffer is full the oldest one is dropped and a
    /// gap notice follows.
    private func deliver(_ event: Event) {
        Self.deliver(event, to: continuation, state: state)
    }

    private static func deliver(_ event: Event, to continuation: AsyncStream<Event>.Continuation, state: NIOLockedValueBox<State>) {
        if case .dropped = continuation.yield(event) {
            let dropped = state.withLockedValue { state in
                state.dropped += 1
                return state.dropped
            }
            _ = continuation.yield(.gap(dropped: dropped))
        }
    }

    /// Subscribes to channels and waits until Redis confirms (at most the command timeout; the
    /// channels stay subscribed after a timeout and are confirmed when the connection is back).
    public func subscribe(channels: [String]) async throws {
        try await change(.channel, names: channels)
    }

    /// Unsubscribes from channels.
    public func unsubscribe(channels: [String]) async throws {
        try await change(.unsubscribeChannel, names: channels)
    }

    /// Subscribes to glob-style patterns (`PSUBSCRIBE`).
    public func subscribe(patterns: [String]) async throws {
        try await change(.pattern, names: patterns)
    }

    /// Unsubscribes from patterns.
    public func unsubscribe(patterns: [String]) async throws {
        try await change(.unsubscribePattern, names: patterns)
    }

    /// Subscribes to shard channels (`SSUBSCRIBE`, Redis 7): channels bound to a hash slot, whose
    /// messages (`SPUBLISH`) stay on the node serving that slot in a cluster. One command per
    /// channel, since a cluster refuses channels of different slots in one.
    public func subscribe(shardChannels: [String]) async throws {
        try await change(.shardChannel, names: shardChannels)
    }

    /// Unsubscribes from shard channels.
    public func unsubscribe(shardChannels: [String]) async throws {
        try await change(.unsubscribeShardChannel, names: shardChannels)
    }

    /// Stops the subscriber: ``run()`` returns and ``events`` ends.
    public func close() async {
        stop()
    }

    private func stop() {
        let (connection, waiters) = state.withLockedValue { state in
            state.closed = true
            let waiters = state.waiters.values.map(\.continuation)
            state.waiters = [:]
            return (state.connection, waiters)
        }
        for waiter in waiters { waiter.resume(throwing: HiredisError.clientClosed) }
        connection?.close()
        primaries?.close()
        continuation.finish()
    }

    func change(_ kind: Kind, names: [String]) async throws {
        guard !names.isEmpty else { return }
        let unique = Set(names)
        let (connection, wanted): (HiredisConnection?, PrimariesSubscription.Wanted) = try state.withLockedValue { state in
            if state.closed { throw HiredisError.clientClosed }
            switch kind {
            case .channel: state.channels.formUnion(unique)
            case .pattern: state.patterns.formUnion(unique)
            case .shardChannel: state.shardChannels.formUnion(unique)
            case .unsubscribeChannel: state.channels.subtract(unique)
            case .unsubscribePattern: state.patterns.subtract(unique)
            case .unsubscribeShardChannel: state.shardChannels.subtract(unique)
            }
            return (
                state.connection,
                PrimariesSubscription.Wanted(channels: state.channels, patterns: state.patterns, shardChannels: state.shardChannels)
            )
        }
        if let primaries {
            try await primaries.apply(wanted, confirming: kind, unique)
            return
        }
        do {
            try await awaitConfirmation(kind, names: unique) {
                // Without a connection, the supervisor sends the current sets when it reconnects.
                try? connection?.sendWithoutReply(Self.commands(kind, unique))
            }
        } catch {
            // Not confirmed: this node holds something it may not have (see isSettled).
            if !(error is ShardChannelsMoved) { state.withLockedValue { $0.settled = false } }
            throw error
        }
    }

    /// The commands that (un)subscribe `names`: shard channels one per command.
    private static func commands(_ kind: Kind, _ names: Set<String>) -> [RESPCommand] {
        guard !names.isEmpty else { return [] }
        let name = kind.rawValue.uppercased()
        if kind == .shardChannel || kind == .unsubscribeShardChannel {
            return names.map { RESPCommand(name, .string($0)) }
        }
        return [RESPCommand(name, arguments: names.map { .string($0) })]
    }

    /// Registers a waiter for Redis's confirmations of `names`, runs `send`, and waits at most the
    /// command timeout.
    private func awaitConfirmation(_ kind: Kind, names: Set<String>, send: () -> Void) async throws {
        guard !names.isEmpty else { return }
        let timeout = configuration.commandTimeout
        let id = state.withLockedValue { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let timer = configuration.eventLoopGroup.any().scheduleTask(in: timeout.timeAmount) { [weak self] in
            let waiter = self?.state.withLockedValue { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume(throwing: HiredisError.timedOut(after: timeout))
        }
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let closed = state.withLockedValue { state in
                if state.closed { return true }
                state.waiters[id] = Waiter(kind: kind, remaining: names, continuation: continuation)
                return false
            }
            if closed {
                continuation.resume(throwing: HiredisError.clientClosed)
                return
            }
            send()
        }
    }

    private func supervise() async {
        var failures = 0
        var connectedBefore = false
        while !Task.isCancelled, !Task.isShuttingDownGracefully, !state.withLockedValue({ $0.closed }) {
            let connection: HiredisConnection
            do {
                connection = try await HiredisConnection.connect(configuration: configuration)
            } catch {
                failures += 1
                let delay = min(
                    configuration.reconnectInitialDelay * (1 << min(failures - 1, 20)), configuration.reconnectMaximumDelay)
                configuration.logger.debug("subscriber cannot connect", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delay.jittered)
                continue
            }
            failures = 0
            await connection.enterSubscriberMode { [weak self] reply in self?.handle(reply) }
            let (channels, patterns, shardChannels, closed) = state.withLockedValue { state in
                state.connection = connection
                return (state.channels, state.patterns, state.shardChannels, state.closed)
            }
            if closed {
                connection.close()
                break
            }
            // Everything held goes again, confirmed. After a reconnect the consumer hears of the
            // gap only once every subscription is back, so that whatever it does to catch up
            // cannot miss a message sent after the notice.
            do {
                try await awaitConfirmation(.channel, names: channels) {
                    try? connection.sendWithoutReply(
                        channels.isEmpty ? [] : [RESPCommand("SUBSCRIBE", arguments: channels.map { .string($0) })])
                }
                try await awaitConfirmation(.pattern, names: patterns) {
                    try? connection.sendWithoutReply(Self.commands(.pattern, patterns))
                }
                do {
                    try await awaitConfirmation(.shardChannel, names: shardChannels) {
                        try? connection.sendWithoutReply(Self.commands(.shardChannel, shardChannels))
                    }
                } catch is ShardChannelsMoved {
                    // Handed back to the owner, which places them on their new node: the
                    // connection stays (closing it would only meet the same MOVED again).
                }
                state.withLockedValue { state in
                    if state.connection === connection { state.settled = true }
                }
                if connectedBefore {
                    deliver(.resubscribed)
                    configuration.logger.info("subscriber reconnected and resubscribed")
                }
            } catch {
                // Not confirmed in time: a reconnect tries again (the first connection stays:
                // what it was sent is confirmed when it comes, and isSettled stays false).
                if connectedBefore { connection.close() }
            }
            connectedBefore = true
            try? await connection.closeFuture.get()
            state.withLockedValue { state in
                state.connection = nil
                state.settled = false
            }
            nodeSignals?(.disconnected)
            if !Task.isCancelled { try? await Task.sleep(for: configuration.reconnectInitialDelay.jittered) }
        }
    }

    /// Whether it has a connection now.
    var isConnected: Bool { state.withLockedValue { $0.connection != nil } }

    /// Whether it is connected and everything it holds was confirmed on this connection: a
    /// ``PrimariesSubscription`` announces a move only when every node subscriber is.
    var isSettled: Bool { state.withLockedValue { $0.connection != nil && $0.settled } }

    private func handle(_ reply: RESPReply) {
        if case .error(let text) = reply, nodeSignals != nil, let slot = Self.movedSlot(text) {
            shardChannelsMoved(inSlot: slot)
            return
        }
        guard case .array(let parts) = reply, case .bulkString(let kindBytes)? = parts.first else { return }
        // Messages first, compared as bytes: a listener receives one per expired key.
        let kind = kindBytes.readableBytesView
        if parts.count == 4, kind.elementsEqual("pmessage".utf8) {
            if let pattern = parts[1].string, let channel = parts[2].string, case .bulkString(let payload) = parts[3] {
                deliver(.message(channel: channel, pattern: pattern, payload: payload))
            }
        } else if parts.count == 3, kind.elementsEqual("message".utf8) || kind.elementsEqual("smessage".utf8) {
            if let channel = parts[1].string, case .bulkString(let payload) = parts[2] {
                deliver(.message(channel: channel, pattern: nil, payload: payload))
            }
        } else {
            guard let confirmed = Kind(rawValue: String(buffer: kindBytes).lowercased()), parts.count >= 2, let name = parts[1].string
            else { return }
            if confirmed == .unsubscribeShardChannel, nodeSignals != nil, droppedByTheServer(name) { return }
            let done = state.withLockedValue { state in
                state.settleWaiters(confirmed) { $0.contains(name) ? [name] : [] }
            }
            for (continuation, moved) in done {
                if moved.isEmpty { continuation.resume() } else { continuation.resume(throwing: ShardChannelsMoved(channels: moved)) }
            }
        }
    }

    // MARK: Shard channels whose slot moved

    /// The slot of a `MOVED slot host:port` error.
    static func movedSlot(_ text: String) -> Int? {
        let words = text.split(separator: " ")
        guard words.count == 3, words[0] == "MOVED", let slot = Int(words[1]), (0..<HashSlot.count).contains(slot) else { return nil }
        return slot
    }

    /// A `sunsubscribe` that nobody asked for: the node tells its sharded subscribers that their
    /// slot left it (Redis 7 does so when a slot migrates). Taking it for a confirmation would
    /// leave the channel believed held where its messages no longer arrive.
    private func droppedByTheServer(_ name: String) -> Bool {
        let dropped = state.withLockedValue { state -> Bool in
            let asked = state.waiters.values.contains { $0.kind == .unsubscribeShardChannel && $0.remaining.contains(name) }
            guard !asked, state.shardChannels.contains(name) else { return false }
            state.shardChannels.remove(name)
            return true
        }
        if dropped { nodeSignals?(.shardChannelsMoved([name])) }
        return dropped
    }

    /// `SSUBSCRIBE` refused with `MOVED`: the channels of that slot are not held here; their
    /// confirmations end with ``ShardChannelsMoved`` so that the owner places them again.
    private func shardChannelsMoved(inSlot slot: Int) {
        let (moved, done) = state.withLockedValue { state -> (Set<String>, [(CheckedContinuation<Void, any Error>, Set<String>)]) in
            let moved = state.shardChannels.filter { HashSlot.of($0) == slot }
            state.shardChannels.subtract(moved)
            let done = state.settleWaiters(.shardChannel, refused: true) { $0.filter { HashSlot.of($0) == slot } }
            return (moved, done)
        }
        if !moved.isEmpty { nodeSignals?(.shardChannelsMoved(moved)) }
        for (continuation, channels) in done { continuation.resume(throwing: ShardChannelsMoved(channels: channels)) }
    }
}
