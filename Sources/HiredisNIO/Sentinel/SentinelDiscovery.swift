import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Finds the primary that a set of Sentinels watch, and follows its failovers.
///
/// A connection to the primary is made by asking the Sentinels in turn
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`; any of them may be down) and confirming with `ROLE` that
/// the node named really is a primary: a Sentinel that lags behind a failover (it names the
/// demoted node, now a replica) is passed over for the next one, and the Sentinel whose answer
/// was confirmed last is asked first next time.
///
/// With ``HiredisConfiguration/discoverSentinels``, a configured Sentinel that names the
/// confirmed primary is also asked, at most once per
/// ``HiredisConfiguration/topologyRefreshInterval`` (when connecting, and from ``run()``), for
/// the other Sentinels it sees up (`SENTINEL SENTINELS`) and the primary's replicas
/// (`SENTINEL REPLICAS`). The Sentinels found are asked after the configured ones, so the client
/// still finds the primary when every configured Sentinel has been replaced. Sentinels learn of
/// each other from messages that any client of the data nodes may publish, so a Sentinel found
/// that way is trusted with nothing:
/// - its answer (and its `+switch-master`) counts only for a node that a configured Sentinel
///   named, the primary or one of its replicas, the only nodes a failover can promote;
/// - it is asked only when the Sentinels take no password, or over TLS that verifies its
///   certificate (an impostor cannot present one), so the Sentinels' password never reaches one
///   (with it, an impostor could reconfigure a configured Sentinel);
/// - it never becomes the preferred Sentinel: the configured ones are always asked first.
///
/// ``run()`` keeps a subscription to `+switch-master` on one Sentinel at a time (the preferred
/// one first), confirmed by the Sentinel within the command timeout (else, after a pause, the next
/// one is tried); when a failover is announced, the pool's connections are closed so that they
/// reconnect to the new primary, checked with `ROLE`. A `READONLY` reply (the node was demoted)
/// and connection loss lead to the same rediscovery.
final class SentinelDiscovery: Sendable {
    private struct State {
        var primary: HiredisAddress?
        /// The Sentinel whose answer was confirmed last, asked first next time.
        var preferred: HiredisAddress?
        var onSwitch: (@Sendable () -> Void)?
        /// Sentinels that a configured one listed, asked after the configured ones.
        var discovered: [HiredisAddress] = []
        /// The data nodes a configured Sentinel named last (the primary and its replicas): the
        /// only ones a discovered Sentinel's answer may name.
        var vouched: Set<HiredisAddress> = []
        /// When a configured Sentinel was last asked for the others and the replicas.
        var learned: ContinuousClock.Instant?
    }

    /// What a Sentinel said: the primary, and, when asked, the Sentinels and replicas it knows.
    struct Answer {
        var primary: HiredisAddress?
        var group: (sentinels: [HiredisAddress], replicas: [HiredisAddress])?
    }

    /// At most this many discovered Sentinels are kept (a listing is not trusted to be small):
    /// with every configured one down, a discovery takes at most this many connect timeouts more.
    static let discoveredLimit = 8

    let sentinels: [HiredisAddress]
    let primaryName: String
    private let configuration: HiredisConfiguration
    private let state = NIOLockedValueBox(State())

    init(sentinels: [HiredisAddress], primaryName: String, configuration: HiredisConfiguration) {
        self.sentinels = sentinels
        self.primaryName = primaryName
        self.configuration = configuration
    }

    /// Called after a failover was announced (the client recycles its pool).
    var onSwitch: (@Sendable () -> Void)? {
        get { state.withLockedValue { $0.onSwitch } }
        set { state.withLockedValue { $0.onSwitch = newValue } }
    }

    private var logger: Logger { configuration.logger }

    /// The configuration of a connection to a Sentinel (its own credentials and TLS, no database).
    private func sentinelConfiguration(_ address: HiredisAddress) -> HiredisConfiguration {
        var sentinel = configuration.forNode(address.description)
        sentinel.username = configuration.sentinelPassword == nil ? nil : configuration.sentinelUsername
        sentinel.password = configuration.sentinelPassword
        sentinel.database = 0
        sentinel.clientName = configuration.clientName.map { $0 + "-sentinel" }
        switch configuration.sentinelTLS {
        case .sameAsNodes: break
        case .off: sentinel.tls = nil
        case .on(let tls): sentinel.tls = tls
        }
        return sentinel
    }

    /// The Sentinels in the order to ask them: the preferred one, the others as configured, then
    /// the discovered ones.
    var candidates: [HiredisAddress] {
        let (preferred, discovered) = state.withLockedValue { ($0.preferred, $0.discovered) }
        var seen: Set<HiredisAddress> = []
        return ([preferred].compactMap { $0 } + sentinels + discovered).filter { seen.insert($0).inserted }
    }

    /// Whether `address` may be taken from `sentinel`: any node from a configured Sentinel, only
    /// a vouched one from a discovered Sentinel.
    private func mayName(_ address: HiredisAddress, from sentinel: HiredisAddress) -> Bool {
        sentinels.contains(sentinel) || state.withLockedValue { $0.vouched.contains(address) }
    }

    /// Whether discovered Sentinels may be asked: they get no password, or TLS verifies them.
    private var mayAskDiscovered: Bool {
        let sentinel = sentinelConfiguration(sentinels.first ?? HiredisAddress(host: "127.0.0.1", port: 26379))
        guard sentinel.password != nil else { return true }
        guard let tls = sentinel.tls else { return false }
        return tls.verification == .full
    }

    /// Whether to ask `sentinel` for the group too: a configured one, when discovery is on (and
    /// allowed, see ``mayAskDiscovered``) and the last time is older than the refresh interval.
    private func shouldLearn(from sentinel: HiredisAddress) -> Bool {
        guard configuration.discoverSentinels, sentinels.contains(sentinel), mayAskDiscovered else { return false }
        let learned = state.withLockedValue { $0.learned }
        return learned.map { ContinuousClock.now - $0 >= configuration.topologyRefreshInterval } ?? true
    }

    /// The configuration for the current primary, when one is known.
    func currentPrimaryConfiguration() -> HiredisConfiguration? {
        state.withLockedValue { $0.primary }.map { configuration.forNode($0.description) }
    }

    /// Asks the Sentinels for the primary, connects to it and checks its role; a Sentinel that
    /// names a replica is passed over for the next.
    func connectToPrimary(libraries: [LuaLibrary], eventLoop: (any EventLoop)? = nil) async throws(HiredisError) -> HiredisConnection {
        var failures: [String] = []
        for sentinel in candidates {
            let address: HiredisAddress
            let answer: Answer
            do {
                answer = try await ask(sentinel, learning: shouldLearn(from: sentinel))
                guard let named = answer.primary else {
                    failures.append("\(sentinel): does not know '\(primaryName)'")
                    continue
                }
                address = named
            } catch {
                failures.append("\(sentinel): \(error)")
                continue
            }
            guard mayName(address, from: sentinel) else {
                failures.append("\(sentinel), a discovered Sentinel, names \(address), which no configured one did")
                continue
            }
            do {
                let connection = try await HiredisConnection.connect(
                    configuration: configuration.forNode(address.description), libraries: libraries, eventLoop: eventLoop)
                guard try await isPrimary(connection) else {
                    connection.close()
                    failures.append("\(sentinel) names \(address), which is a replica")
                    continue
                }
                state.withLockedValue { state in
                    // A discovered Sentinel is never asked first (see the type's notes).
                    if sentinels.contains(sentinel) { state.preferred = sentinel }
                    state.primary = address
                }
                if let group = answer.group { learn(group, primary: address) }
                return connection
            } catch {
                failures.append("\(address): \(error)")
            }
        }
        throw .cannotConnect(
            address: "primary '\(primaryName)'", reason: "no Sentinel named a primary (\(failures.joined(separator: "; ")))")
    }

    /// The primary's address, confirmed by its role.
    func discoverPrimary() async throws(HiredisError) -> HiredisAddress {
        let connection = try await connectToPrimary(libraries: [])
        connection.close()
        guard let primary = state.withLockedValue({ $0.primary }) else {
            throw .cannotConnect(address: "primary '\(primaryName)'", reason: "no Sentinel named a primary")
        }
        return primary
    }

    /// Records what a configured Sentinel that named the confirmed `primary` said of the group.
    private func learn(_ group: (sentinels: [HiredisAddress], replicas: [HiredisAddress]), primary: HiredisAddress) {
        state.withLockedValue { state in
            state.learned = .now
            state.vouched = Set([primary] + group.replicas)
            state.discovered = Array(group.sentinels.filter { !sentinels.contains($0) }.prefix(Self.discoveredLimit))
        }
    }

    /// Asks the configured Sentinels in turn, every refresh interval, for the group (see
    /// ``shouldLearn(from:)``), so that a client whose connections live long still knows the
    /// Sentinels and replicas of now; only a Sentinel that names the confirmed primary counts.
    private func learnPeriodically() async {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await Task.sleep(for: configuration.topologyRefreshInterval.jittered)
            } catch {
                return
            }
            guard let primary = state.withLockedValue({ $0.primary }) else { continue }
            for sentinel in sentinels where shouldLearn(from: sentinel) {
                guard let answer = try? await ask(sentinel, learning: true), answer.primary == primary, let group = answer.group
                else { continue }
                learn(group, primary: primary)
                break
            }
        }
    }

    /// What `sentinel` says the primary is (nil: it does not know the name), and with `learning`
    /// the other Sentinels and the replicas it knows.
    private func ask(_ sentinel: HiredisAddress, learning: Bool) async throws -> Answer {
        let connection = try await HiredisConnection.connect(configuration: sentinelConfiguration(sentinel))
        defer { connection.close() }
        var commands = [RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", .string(primaryName))]
        if learning {
            commands += [
                RESPCommand("SENTINEL", "SENTINELS", .string(primaryName)), RESPCommand("SENTINEL", "REPLICAS", .string(primaryName)),
            ]
        }
        let replies = try await connection.pipeline(commands)
        if case .error(let text) = replies[0] { throw HiredisError.server(HiredisServerError(reply: text)) }
        var answer = Answer()
        if let parts = replies[0].array, parts.count == 2, let host = parts[0].string, let port = parts[1].int {
            answer.primary = HiredisAddress(host: host, port: port)
        }
        // A Sentinel that does not know the name errors on both: nothing learnt.
        if learning, replies.count == 3, replies[1].array != nil, replies[2].array != nil {
            answer.group = (Self.addresses(in: replies[1]), Self.addresses(in: replies[2]))
        }
        return answer
    }

    /// The `ip` and `port` fields of each entry of a `SENTINEL SENTINELS` or `SENTINEL REPLICAS`
    /// reply (flat `[name, value, ...]` arrays), but those the Sentinel sees down
    /// or disconnected (a flood of announced addresses that answer nothing is left out).
    static func addresses(in reply: RESPReply) -> [HiredisAddress] {
        (reply.array ?? []).compactMap { entry in
            let fields = entry.fieldMap
            let flags = (fields["flags"]?.string ?? "").split(separator: ",")
            guard let host = fields["ip"]?.string, !host.isEmpty, let port = fields["port"]?.string.flatMap({ Int($0) }),
                (1...65535).contains(port),
                !flags.contains(where: { $0 == "s_down" || $0 == "o_down" || $0 == "disconnected" })
            else { return nil }
            return HiredisAddress(host: host, port: port)
        }
    }

    private func isPrimary(_ connection: HiredisConnection) async throws -> Bool {
        try await connection.send(RESPCommand("ROLE")).array?.first?.string == "master"
    }

    /// Follows `+switch-master` announcements (and, with discovery, learns the group every refresh
    /// interval) until cancelled or shut down.
    func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.followSwitches() }
            if configuration.discoverSentinels { group.addTask { await self.learnPeriodically() } }
            // Whichever ends first (shutdown, cancellation) ends the other.
            await group.next()
            group.cancelAll()
        }
    }

    /// Follows `+switch-master` announcements on the preferred Sentinel; one that does not confirm
    /// the subscription within the command timeout, or whose connection fails, is left for the
    /// next.
    private func followSwitches() async {
        var failures = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let candidates = self.candidates
            let sentinel = candidates[failures % candidates.count]
            do {
                let connection = try await HiredisConnection.connect(configuration: sentinelConfiguration(sentinel))
                let confirmed = NIOLockedValueBox(false)
                await connection.enterSubscriberMode { [weak self] reply in
                    if Self.isConfirmation(reply) {
                        confirmed.withLockedValue { $0 = true }
                    } else {
                        self?.handle(reply, from: sentinel)
                    }
                }
                try connection.sendWithoutReply([RESPCommand("SUBSCRIBE", "+switch-master")])
                let check = connection.closeFuture.eventLoop.scheduleTask(in: configuration.commandTimeout.timeAmount) {
                    if !confirmed.withLockedValue({ $0 }) { connection.close() }
                }
                await withGracefulShutdownHandler {
                    await withTaskCancellationHandler {
                        try? await connection.closeFuture.get()
                    } onCancel: {
                        connection.close()
                    }
                } onGracefulShutdown: {
                    connection.close()
                }
                check.cancel()
                if confirmed.withLockedValue({ $0 }) {
                    failures = 0
                } else {
                    // (An ACL user without `&+switch-master` is refused the channel: said loudly.)
                    failures += 1
                    logger.warning("Sentinel did not confirm the +switch-master subscription", metadata: ["sentinel": "\(sentinel)"])
                }
                // A subscription that ended is taken again after a pause, not at once.
                if !Task.isCancelled && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: configuration.reconnectMaximumDelay.jittered / 4)
                }
            } catch {
                failures += 1
                logger.debug("Sentinel subscription failed", metadata: ["sentinel": "\(sentinel)", "error": "\(error)"])
                try? await Task.sleep(for: configuration.reconnectMaximumDelay.jittered)
            }
        }
    }

    /// `subscribe +switch-master 1`.
    static func isConfirmation(_ reply: RESPReply) -> Bool {
        guard let parts = reply.array, parts.count == 3 else { return false }
        return parts[0].string == "subscribe" && parts[1].string == "+switch-master"
    }

    /// `+switch-master <name> <old ip> <old port> <new ip> <new port>`.
    /// A discovered Sentinel's announcement counts only for a vouched node.
    private func handle(_ reply: RESPReply, from sentinel: HiredisAddress) {
        guard let parts = reply.array, parts.count == 3, parts[0].string == "message", let text = parts[2].string else { return }
        let words = text.split(separator: " ")
        guard words.count == 5, words[0] == primaryName, let port = Int(words[4]) else { return }
        let address = HiredisAddress(host: String(words[3]), port: port)
        // A discovered Sentinel that repeats the primary in use recycles nothing.
        if !sentinels.contains(sentinel), state.withLockedValue({ $0.primary }) == address { return }
        guard mayName(address, from: sentinel) else {
            logger.warning(
                "A discovered Sentinel announced a primary no configured Sentinel named; ignored", metadata: ["sentinel": "\(sentinel)"])
            return
        }
        let callback = state.withLockedValue { state in
            state.primary = address
            return state.onSwitch
        }
        logger.info("Sentinel announced a failover", metadata: ["primary": "\(primaryName)", "address": "\(address)"])
        callback?()
    }
}
