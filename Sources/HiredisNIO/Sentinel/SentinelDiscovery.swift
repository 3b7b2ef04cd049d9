import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Finds the primary that a set of Sentinels watch, and follows its failovers.
///
/// A connection to the primary is made by asking the Sentinels in turn
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`; any of them may be down) and confirming with `ROLE` that
/// the node named really is a primary: a Sentinel that lags behind a failover (it names the
/// demoted node, now a replica) is passed over for the next one, and only a Sentinel whose answer
/// was confirmed is asked first next time and carries the subscription. Each Sentinel that
/// answers also names the others it knows (`SENTINEL SENTINELS`), which are asked too. ``run()``
/// keeps a subscription to `+switch-master` on one Sentinel at a time, confirmed by the Sentinel
/// within the command timeout (else the next one is tried); when a failover is announced, the
/// pool's connections are closed so that they reconnect to the new primary. A `READONLY` reply
/// (the node was demoted) and connection loss lead to the same rediscovery.
final class SentinelDiscovery: Sendable {
    private struct State {
        var primary: HiredisAddress?
        /// The Sentinel whose answer was confirmed last, asked first next time.
        var preferred: HiredisAddress?
        /// Sentinels that the configured ones named (`SENTINEL SENTINELS`).
        var discovered: [HiredisAddress] = []
        var onSwitch: (@Sendable () -> Void)?
    }

    let sentinels: [HiredisAddress]
    let primaryName: String
    private let configuration: HiredisConfiguration
    private let state = NIOLockedValueBox(State())
    /// The most Sentinels learnt from others (a Sentinel's answer is not trusted to grow the list
    /// without bound).
    static let mostDiscovered = 16

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

    /// The configuration of a connection to a Sentinel (its own password, no database).
    private func sentinelConfiguration(_ address: HiredisAddress) -> HiredisConfiguration {
        var sentinel = configuration.forNode(address.description)
        sentinel.username = configuration.sentinelPassword == nil ? nil : configuration.sentinelUsername
        sentinel.password = configuration.sentinelPassword
        sentinel.database = 0
        sentinel.clientName = configuration.clientName.map { $0 + "-sentinel" }
        return sentinel
    }

    /// The Sentinels in the order to ask them: the preferred one, the configured ones, the ones
    /// they named.
    var candidates: [HiredisAddress] {
        let (preferred, discovered) = state.withLockedValue { ($0.preferred, $0.discovered) }
        var seen: Set<HiredisAddress> = []
        return ([preferred].compactMap { $0 } + sentinels + discovered).filter { seen.insert($0).inserted }
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
            do {
                guard let named = try await ask(sentinel) else {
                    failures.append("\(sentinel): does not know '\(primaryName)'")
                    continue
                }
                address = named
            } catch {
                failures.append("\(sentinel): \(error)")
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
                    state.preferred = sentinel
                    state.primary = address
                }
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

    /// What `sentinel` says the primary is (nil: it does not know the name), and the Sentinels it
    /// knows, remembered.
    private func ask(_ sentinel: HiredisAddress) async throws -> HiredisAddress? {
        let connection = try await HiredisConnection.connect(configuration: sentinelConfiguration(sentinel))
        defer { connection.close() }
        let replies = try await connection.pipeline(
            [
                RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", .string(primaryName)),
                RESPCommand("SENTINEL", "SENTINELS", .string(primaryName)),
            ], timeout: configuration.commandTimeout)
        remember(Self.sentinels(in: replies[1]))
        guard let parts = replies[0].array, parts.count == 2, let host = parts[0].string, let port = parts[1].int else { return nil }
        return HiredisAddress(host: host, port: port)
    }

    private func remember(_ named: [HiredisAddress]) {
        state.withLockedValue { state in
            for address in named where !sentinels.contains(address) && !state.discovered.contains(address) {
                guard state.discovered.count < Self.mostDiscovered else { break }
                state.discovered.append(address)
            }
        }
    }

    /// The Sentinels a `SENTINEL SENTINELS` reply names (each a flat list of field, value), except
    /// those it considers down.
    static func sentinels(in reply: RESPReply) -> [HiredisAddress] {
        (reply.array ?? []).compactMap { entry -> HiredisAddress? in
            let values = entry.array?.compactMap(\.string) ?? []
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: values.count - 1, by: 2) { fields[values[index]] = values[index + 1] }
            guard let ip = fields["ip"], let port = fields["port"].flatMap(Int.init), (1...65535).contains(port),
                !(fields["flags"] ?? "").contains("s_down"), !(fields["flags"] ?? "").contains("o_down")
            else { return nil }
            return HiredisAddress(host: ip, port: port)
        }
    }

    private func isPrimary(_ connection: HiredisConnection) async throws -> Bool {
        try await connection.send(RESPCommand("ROLE")).array?.first?.string == "master"
    }

    /// Follows `+switch-master` announcements until cancelled or shut down, on the preferred
    /// Sentinel; one that does not confirm the subscription within the command timeout, or whose
    /// connection fails, is left for the next.
    func run() async {
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
                        self?.handle(reply)
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
                    failures += 1
                    logger.debug("Sentinel did not confirm the subscription", metadata: ["sentinel": "\(sentinel)"])
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
    private func handle(_ reply: RESPReply) {
        guard let parts = reply.array, parts.count == 3, parts[0].string == "message", let text = parts[2].string else { return }
        let words = text.split(separator: " ")
        guard words.count == 5, words[0] == primaryName, let port = Int(words[4]) else { return }
        let address = HiredisAddress(host: String(words[3]), port: port)
        let callback = state.withLockedValue { state in
            state.primary = address
            return state.onSwitch
        }
        logger.info("Sentinel announced a failover", metadata: ["primary": "\(primaryName)", "address": "\(address)"])
        callback?()
    }
}
