import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Finds the primary that a set of Sentinels watch, and follows its failovers.
///
/// A connection to the primary is made by asking the Sentinels in turn
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`; any of them may be down) and confirming with `ROLE` that
/// the node named really is a primary (a Sentinel may lag behind a failover). ``run()`` keeps a
/// subscription to `+switch-master` on one Sentinel at a time; when a failover is announced, the
/// pool's connections are closed so that they reconnect to the new primary. A `READONLY` reply
/// (the node was demoted) and connection loss lead to the same rediscovery.
final class SentinelDiscovery: Sendable {
    private struct State {
        var primary: HiredisAddress?
        /// The Sentinel that answered last, asked first next time.
        var preferred = 0
        var onSwitch: (@Sendable () -> Void)?
    }

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

    /// The configuration of a connection to a Sentinel (its own password, no database).
    private func sentinelConfiguration(_ address: HiredisAddress) -> HiredisConfiguration {
        var sentinel = configuration.forNode(address.description)
        sentinel.username = nil
        sentinel.password = configuration.sentinelPassword
        sentinel.database = 0
        sentinel.clientName = configuration.clientName.map { $0 + "-sentinel" }
        return sentinel
    }

    /// The configuration for the current primary, when one is known.
    func currentPrimaryConfiguration() -> HiredisConfiguration? {
        state.withLockedValue { $0.primary }.map { configuration.forNode($0.description) }
    }

    /// Asks the Sentinels for the primary, connects to it and checks its role.
    func connectToPrimary(libraries: [LuaLibrary], eventLoop: (any EventLoop)? = nil) async throws(HiredisError) -> HiredisConnection {
        let address = try await discoverPrimary()
        let connection = try await HiredisConnection.connect(
            configuration: configuration.forNode(address.description), libraries: libraries, eventLoop: eventLoop)
        do {
            let role = try await connection.send(RESPCommand("ROLE"))
            guard role.array?.first?.string == "master" else {
                connection.close()
                throw HiredisError.cannotConnect(
                    address: address.description, reason: "the Sentinels name it as primary '\(primaryName)' but it is a replica")
            }
        } catch let error as HiredisError {
            connection.close()
            throw error
        } catch {
            connection.close()
            throw .connectionLost(reason: "\(error)")
        }
        return connection
    }

    /// The primary's address according to the first Sentinel that answers.
    func discoverPrimary() async throws(HiredisError) -> HiredisAddress {
        let start = state.withLockedValue { $0.preferred }
        var failures: [String] = []
        for offset in 0..<sentinels.count {
            let index = (start + offset) % sentinels.count
            let sentinel = sentinels[index]
            do {
                let connection = try await HiredisConnection.connect(configuration: sentinelConfiguration(sentinel))
                defer { connection.close() }
                let reply = try await connection.send(RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", .string(primaryName)))
                guard let parts = reply.array, parts.count == 2, let host = parts[0].string, let port = parts[1].int else {
                    failures.append("\(sentinel): does not know '\(primaryName)'")
                    continue
                }
                let address = HiredisAddress(host: host, port: port)
                state.withLockedValue { state in
                    state.preferred = index
                    state.primary = address
                }
                return address
            } catch {
                failures.append("\(sentinel): \(error)")
            }
        }
        throw .cannotConnect(address: "primary '\(primaryName)'", reason: "no Sentinel answered (\(failures.joined(separator: "; ")))")
    }

    /// Follows `+switch-master` announcements until cancelled or shut down.
    func run() async {
        var failures = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let index = state.withLockedValue { $0.preferred } + failures
            let sentinel = sentinels[index % sentinels.count]
            do {
                let connection = try await HiredisConnection.connect(configuration: sentinelConfiguration(sentinel))
                failures = 0
                await connection.enterSubscriberMode { [weak self] reply in self?.handle(reply) }
                try connection.sendWithoutReply([RESPCommand("SUBSCRIBE", "+switch-master")])
                await withGracefulShutdownHandler {
                    await withTaskCancellationHandler {
                        try? await connection.closeFuture.get()
                    } onCancel: {
                        connection.close()
                    }
                } onGracefulShutdown: {
                    connection.close()
                }
            } catch {
                failures += 1
                logger.debug("Sentinel subscription failed", metadata: ["sentinel": "\(sentinel)", "error": "\(error)"])
                try? await Task.sleep(for: configuration.reconnectMaximumDelay.jittered)
            }
        }
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
