import Foundation
import HiredisNIO

/// A primary with replicas and the Sentinels that watch it, on loopback: for failover tests.
///
/// ```swift
/// try await RedisSentinelGroup.with { group in
///     let client = try HiredisClient.started(configuration: group.configuration)
///     try await client.set("greeting", to: "hello")
///     try await group.failover()  // the client follows +switch-master
/// }
/// ```
public final class RedisSentinelGroup: Sendable {
    /// How the group is made.
    public struct Options: Sendable {
        public var replicas = 2
        public var sentinels = 3
        /// The name the Sentinels know the primary by.
        public var primaryName = "mymaster"
        /// `down-after-milliseconds`: how long the primary may be silent before a failover.
        public var downAfter: Duration = .milliseconds(1000)
        /// Options for the data nodes. With ``RedisServer/Options/tls`` they talk TLS only, to
        /// each other too (`tls-replication`), and so do the Sentinels, which then need
        /// ``sentinelTLS``.
        public var node = RedisServer.Options()
        /// Certificates for the Sentinels' own TLS port. With plaintext data nodes the Sentinels
        /// keep a plaintext port as well, which they use among themselves (they talk to each
        /// other as they talk to the data nodes); clients use the TLS one.
        public var sentinelTLS: TLSCertificates?

        public init(replicas: Int = 2, sentinels: Int = 3) {
            self.replicas = replicas
            self.sentinels = sentinels
        }
    }

    /// The data nodes, the first primary first.
    public let nodes: [RedisServer]
    /// The Sentinels.
    public let sentinels: [RedisServer]
    public let options: Options

    private init(nodes: [RedisServer], sentinels: [RedisServer], options: Options) {
        self.nodes = nodes
        self.sentinels = sentinels
        self.options = options
    }

    /// `redis+sentinel://127.0.0.1:s1,.../primaryName` (`rediss+sentinel://` and the TLS options
    /// when the data nodes use TLS; `sentinel_tls_` options when only the Sentinels do).
    public var url: String {
        let hosts = sentinels.map(\.address.description).joined(separator: ",")
        var options: [String] = []
        if let tls = self.options.node.tls {
            options += ["tls_ca_file=\(tls.caFile)", "tls_cert_file=\(tls.clientCertificateFile)", "tls_key_file=\(tls.clientKeyFile)"]
        }
        if let tls = self.options.sentinelTLS, tls.directory != self.options.node.tls?.directory {
            options += [
                "sentinel_tls_ca_file=\(tls.caFile)", "sentinel_tls_cert_file=\(tls.clientCertificateFile)",
                "sentinel_tls_key_file=\(tls.clientKeyFile)",
            ]
        }
        let scheme = self.options.node.tls == nil ? "redis+sentinel://" : "rediss+sentinel://"
        return scheme + hosts + "/" + self.options.primaryName + (options.isEmpty ? "" : "?" + options.joined(separator: "&"))
    }

    /// A client configuration that finds the primary through the Sentinels.
    public var configuration: HiredisConfiguration {
        var configuration = nodes[0].configuration
        configuration.topology = .sentinel(sentinels: sentinels.map(\.address), primaryName: options.primaryName)
        if let tls = options.sentinelTLS, tls.directory != options.node.tls?.directory {
            configuration.sentinelTLS = .on(tls.clientConfiguration)
        }
        return configuration
    }

    /// Starts the primary, its replicas and the Sentinels, and waits until every Sentinel knows
    /// every replica and the other Sentinels (so that a failover can be agreed).
    public static func start(_ options: Options = Options()) async throws -> RedisSentinelGroup {
        if options.node.tls != nil, options.sentinelTLS == nil {
            // Sentinels then reach the nodes and each other over TLS only, on the port they
            // announce: their TLS port.
            throw RedisServer.StartError(description: "data nodes on TLS need Sentinels on TLS (sentinelTLS)")
        }
        var node = options.node
        // Every node may become a replica (the old primary after a failover).
        if node.tls != nil { node.extra.append(("tls-replication", "yes")) }
        if let password = node.password { node.extra.append(("masterauth", password)) }
        var started: [RedisServer] = []
        do {
            let primary = try await RedisServer.start(node)
            started.append(primary)
            var nodes = [primary]
            for _ in 0..<options.replicas {
                var replica = node
                replica.arguments += ["--replicaof", "127.0.0.1", "\(primary.port)"]
                let node = try await RedisServer.start(replica)
                started.append(node)
                nodes.append(node)
            }
            var sentinels: [RedisServer] = []
            let name = options.primaryName
            for _ in 0..<options.sentinels {
                var sentinel = RedisServer.Options(notifyKeyspaceEvents: nil)
                sentinel.sentinel = true
                if let tls = options.sentinelTLS {
                    sentinel.tls = tls
                    sentinel.plaintextPortToo = options.node.tls == nil
                }
                if options.node.tls != nil { sentinel.extra.append(("tls-replication", "yes")) }
                sentinel.configurationFile =
                    [
                        "sentinel monitor \(name) 127.0.0.1 \(primary.port) \(options.sentinels / 2 + 1)",
                        "sentinel down-after-milliseconds \(name) \(options.downAfter.wholeMilliseconds)",
                        "sentinel failover-timeout \(name) 5000",
                        "sentinel parallel-syncs \(name) 1",
                    ] + (options.node.password.map { ["sentinel auth-pass \(name) \($0)"] } ?? [])
                let server = try await RedisServer.start(sentinel)
                started.append(server)
                sentinels.append(server)
            }
            let group = RedisSentinelGroup(nodes: nodes, sentinels: sentinels, options: options)
            try await group.waitUntilStable()
            return group
        } catch {
            for server in started { await server.stop() }
            throw error
        }
    }

    /// Starts a group, runs `body`, and stops every server, also when `body` throws.
    public static func with<T: Sendable>(_ options: Options = Options(), _ body: (RedisSentinelGroup) async throws -> T) async throws -> T {
        try await withStarted(try await start(options), stop: { await $0.stop() }, body)
    }

    /// Stops every server and removes their files.
    public func stop() async {
        for server in sentinels + nodes { await server.stop() }
    }

    /// Sends one command to one server over a connection of its own.
    /// (Sentinels are started without the data nodes' password.)
    public func send(_ command: RESPCommand, to server: RedisServer) async throws -> RESPReply {
        try await server.send(command)
    }

    /// The primary according to the first Sentinel that answers.
    public func primary() async throws -> RedisServer {
        for sentinel in sentinels where sentinel.pid != nil {
            let reply = try? await send(
                RESPCommand("SENTINEL", "GET-MASTER-ADDR-BY-NAME", .string(options.primaryName)), to: sentinel)
            if let port = reply?.array?.last?.int, let node = nodes.first(where: { $0.port == port }) { return node }
        }
        throw RedisServer.StartError(description: "no Sentinel names a primary")
    }

    /// Asks the Sentinels for a failover (`SENTINEL FAILOVER`) and waits until every Sentinel
    /// names the new primary and it accepts writes; returns it.
    @discardableResult
    public func failover() async throws -> RedisServer {
        let old = try await primary()
        _ = try await send(RESPCommand("SENTINEL", "FAILOVER", .string(options.primaryName)), to: sentinels[0])
        return try await waitForNewPrimary(replacing: old)
    }

    /// Kills the primary (SIGKILL) and waits until the Sentinels have promoted a replica.
    @discardableResult
    public func killPrimary() async throws -> RedisServer {
        let old = try await primary()
        await old.kill()
        return try await waitForNewPrimary(replacing: old)
    }

    private func waitForNewPrimary(replacing old: RedisServer) async throws -> RedisServer {
        try await pollUntil("a new primary") {
            let current = try await self.primary()
            guard current !== old else { return false }
            let role = try await self.send(RESPCommand("ROLE"), to: current).array?.first?.string
            return role == "master"
        }
        try await waitUntilStable()
        return try await primary()
    }

    /// Waits until every running Sentinel agrees on the primary, knows the other Sentinels and
    /// sees every running replica in sync.
    public func waitUntilStable() async throws {
        let name = options.primaryName
        try await pollUntil("the Sentinels to agree") {
            var primaries: Set<Int> = []
            let runningSentinels = self.sentinels.filter { $0.pid != nil }
            for sentinel in runningSentinels {
                let reply = try await self.send(RESPCommand("SENTINEL", "MASTER", .string(name)), to: sentinel)
                let fields = reply.fieldMap
                guard let port = fields["port"].flatMap(Int.init), fields["flags"] == "master",
                    fields["num-other-sentinels"].flatMap(Int.init) == runningSentinels.count - 1,
                    fields["num-slaves"].flatMap(Int.init) ?? 0 >= self.nodes.filter({ $0.pid != nil }).count - 1
                else { return false }
                primaries.insert(port)
            }
            guard primaries.count == 1, let port = primaries.first,
                let primary = self.nodes.first(where: { $0.port == port })
            else { return false }
            let role = try await self.send(RESPCommand("ROLE"), to: primary).array ?? []
            let connected = role.count > 2 ? (role[2].array?.count ?? 0) : 0
            return role.first?.string == "master" && connected >= self.nodes.filter({ $0.pid != nil }).count - 1
        }
    }

}

extension RESPReply {
    /// A flat `[name, value, name, value...]` reply as a dictionary.
    fileprivate var fieldMap: [String: String] {
        let items = array ?? []
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string, let value = items[index + 1].string { fields[name] = value }
            index += 2
        }
        return fields
    }
}
