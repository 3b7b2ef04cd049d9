import CoreMetrics
import Logging
import NIOCore
import NIOPosix

/// How to reach Redis and how to behave when it misbehaves.
///
/// ```swift
/// var configuration = try HiredisConfiguration(url: "redis://app:secret@127.0.0.1:6379/2")
/// configuration.commandTimeout = .seconds(2)
/// let cluster = try HiredisConfiguration(url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
/// let sentinel = try HiredisConfiguration(url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/sessions")
/// let secure = try HiredisConfiguration(url: "rediss://redis.internal:6380?tls_ca_file=/etc/ssl/redis-ca.pem")
/// ```
public struct HiredisConfiguration: Sendable {
    /// How the servers are arranged.
    public enum Topology: Sendable, Hashable {
        /// One server at ``HiredisConfiguration/host``:``HiredisConfiguration/port``.
        case standalone
        /// A Redis Cluster, discovered from any of `seeds` (`CLUSTER SHARDS`).
        case cluster(seeds: [HiredisAddress])
        /// A primary with replicas, watched by Sentinels: the primary named `primaryName`, as any
        /// of `sentinels` reports it.
        case sentinel(sentinels: [HiredisAddress], primaryName: String)
    }

    /// How the connections to the Sentinels are secured. Sentinels are often reached otherwise
    /// than the data nodes: plaintext on a private network while the data travels over TLS, or
    /// with a certificate authority of their own.
    public enum SentinelTLS: Sendable, Hashable {
        /// As the data nodes: ``HiredisConfiguration/tls``.
        case sameAsNodes
        /// Plaintext, whatever the data nodes use.
        case off
        /// TLS with these settings, whatever the data nodes use.
        case on(HiredisTLSConfiguration)
    }

    /// Host name or address (standalone; for a cluster or Sentinel, set by the client per node).
    public var host: String = "127.0.0.1"
    /// TCP port.
    public var port: Int = 6379
    /// Standalone, cluster or Sentinel.
    public var topology: Topology = .standalone
    /// TLS (`rediss://`); nil for plaintext.
    public var tls: HiredisTLSConfiguration? = nil
    /// ACL user name; with a password only, `AUTH password` is sent.
    public var username: String? = nil
    /// Password for `AUTH`.
    public var password: String? = nil
    /// ACL user name for the Sentinels (Redis 6.2 or later), with ``sentinelPassword``; nil:
    /// `AUTH password` alone, or no authentication.
    public var sentinelUsername: String? = nil
    /// Password for the Sentinels, when they require one (they usually have their own).
    public var sentinelPassword: String? = nil
    /// TLS for the connections to the Sentinels: as the data nodes' (``tls``) by default.
    public var sentinelTLS: SentinelTLS = .sameAsNodes
    /// Whether to ask the configured Sentinels for the others (`SENTINEL SENTINELS`) and ask
    /// those too when no configured one names the primary, so that a client outlives the
    /// replacement of its configured Sentinels. A Sentinel found this way is not trusted to name
    /// a node (only the primary or a replica that a configured Sentinel named counts), is never
    /// asked first, and is asked only when the Sentinels take no password (``sentinelPassword``)
    /// or over TLS with full verification, so that the password never reaches an impostor. URL
    /// option: `sentinel_discovery=on|off`.
    public var discoverSentinels: Bool = true
    /// Database for `SELECT` (sent when not 0; a cluster has only database 0).
    public var database: Int = 0
    /// Name for `CLIENT SETNAME`, so operators can tell connections apart in `CLIENT LIST`.
    public var clientName: String? = "swift-session-cache"
    /// Connections per node that share the command load; concurrent commands on one connection
    /// are pipelined. Each takes the next loop of ``eventLoopGroup``; a caller running on one of
    /// those loops (``HiredisClient/taskExecutors``) uses the connection on its own loop.
    public var poolSize: Int = 2
    /// How long to wait for TCP connect plus the handshake (TLS, AUTH, SELECT, CLIENT SETNAME).
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command waits for its reply, retries of transient refusals included.
    public var commandTimeout: Duration = .seconds(5)
    /// Delay before the first reconnect attempt after a failed one; doubled after each failed
    /// attempt up to ``reconnectMaximumDelay``. A lost connection is replaced at once.
    public var reconnectInitialDelay: Duration = .milliseconds(20)
    /// The cap of the reconnect delay.
    public var reconnectMaximumDelay: Duration = .seconds(1)
    /// A connection idle this long sends a `PING`; one that gets no reply within
    /// ``commandTimeout`` is closed and replaced. nil turns the check off.
    ///
    /// With commands in flight no PING is needed: a command that times out while nothing at all
    /// arrived on its connection since it was written closes the connection too. So a connection
    /// the network dropped without a reset is found within `commandTimeout` when busy and
    /// `healthCheckInterval + commandTimeout` when idle, not the kernel's 15 minutes.
    public var healthCheckInterval: Duration? = .seconds(10)
    /// TCP keepalive on every connection (idle 10 s, then 3 probes 5 s apart), which also keeps
    /// idle connections through NAT and firewalls.
    public var tcpKeepalive = true
    /// Commands that may wait on one connection (written or queued); past it a command fails at
    /// once with ``HiredisError/Code/overloaded``, without being sent.
    public var maximumPendingCommands = 10_000
    /// How large a reply may be (elements, bytes, nesting), enforced while it arrives: past a
    /// limit the connection is dropped and its commands fail with
    /// ``HiredisError/Code/replyTooLarge``. See ``ReplyLimits`` for the defaults.
    public var replyLimits = ReplyLimits()
    /// Replies by which Redis refused a command for a passing reason (`LOADING`, `BUSY`,
    /// `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`) are retried with back-off within the command's
    /// timeout.
    public var retryTransientErrors = true
    /// Cluster: send single read-only commands (``RESPCommand/isReadOnly``: `GET`, `HGETALL`,
    /// `FCALL_RO`, ...) to a replica of the slot's shard, over connections in `READONLY` mode,
    /// taking the shard's connected replicas in turn. The primary serves them when the shard has
    /// no connected replica, or when the replica fails or no longer serves the slot. Off by
    /// default: replication is asynchronous, so a read from a replica may miss the latest writes
    /// (a session just created, a message just appended). Explicit pipelines always go to the
    /// primaries. A replica that stops answering costs the reads waiting on it their timeout,
    /// once: its silent connection is then closed, and reads go to the primary until it is back.
    public var readFromReplicas = false
    /// The connection is to a cluster replica for reads: its handshake sends `READONLY`.
    var isReadOnlyReplica = false
    /// Cluster: how many `MOVED`/`ASK` redirections one command may follow.
    public var maximumRedirections = 5
    /// Cluster: how often the topology is read again besides after `MOVED` and connection loss.
    public var topologyRefreshInterval: Duration = .seconds(30)
    /// Where the client logs (connects, disconnects, failovers, protocol errors), never per command.
    /// Defaults to the `LoggingSystem` the application bootstrapped.
    public var logger: Logger = Logger(label: "redis-client")
    /// Where the client records `redis.commands`, `redis.errors`, `redis.command.duration`,
    /// `redis.reconnects`, `redis.retries` and `redis.redirections`. Defaults to the factory the
    /// application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory
    /// The event loops connections run on.
    public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    /// A configuration for `host:port` with every other setting at its default.
    public init(host: String = "127.0.0.1", port: Int = 6379) {
        self.host = host
        self.port = port
    }

    /// A configuration from a URL:
    ///
    /// - `redis://[[user]:password@]host[:port][/db]`, `rediss://...` for TLS;
    /// - `redis+cluster://[[user]:password@]host1:port1,host2:port2` (`rediss+cluster://`): any
    ///   nodes of a cluster, from which the rest is discovered;
    /// - `redis+sentinel://[[user]:password@]host1:port1,host2:port2/primaryName[/db]`
    ///   (`rediss+sentinel://`): the Sentinels and the name of the primary they watch.
    ///
    /// TLS options go in the query: `tls_ca_file`, `tls_cert_file`, `tls_key_file`,
    /// `tls_server_name`, `tls_verify` (`full`, the default; `no_hostname`; `none`).
    ///
    /// Sentinel URLs take the Sentinels' own settings in the query too: `sentinel_username`
    /// and `sentinel_password` (``sentinelUsername``, ``sentinelPassword``); `sentinel_tls=off`
    /// for plaintext Sentinels; `sentinel_tls=on` for TLS to them, with the data nodes' TLS
    /// options unless `sentinel_tls_ca_file`, `sentinel_tls_cert_file`, `sentinel_tls_key_file`,
    /// `sentinel_tls_server_name` or `sentinel_tls_verify` say otherwise (any of them implies
    /// `sentinel_tls=on`); `sentinel_discovery=off` to ask the listed Sentinels only
    /// (``discoverSentinels``).
    ///
    /// ```swift
    /// let sentinels = try HiredisConfiguration(
    ///     url: "rediss+sentinel://app:secret@10.0.0.1:26379,10.0.0.2:26379/sessions"
    ///         + "?tls_ca_file=/etc/ssl/redis-ca.pem&sentinel_tls=off&sentinel_password=watcher")
    /// ```
    ///
    /// Errors name the URL without its credentials (``redacted(_:)``).
    public init(url: String) throws(HiredisError) {
        let shown = Self.redacted(url)
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw .invalidConfiguration("'\(shown)' is not a redis:// URL")
        }
        let scheme = parts[0].lowercased()
        let secure: Bool
        enum Kind { case standalone, cluster, sentinel }
        let kind: Kind
        switch scheme {
        case "redis": (secure, kind) = (false, .standalone)
        case "rediss": (secure, kind) = (true, .standalone)
        case "redis+cluster": (secure, kind) = (false, .cluster)
        case "rediss+cluster": (secure, kind) = (true, .cluster)
        case "redis+sentinel": (secure, kind) = (false, .sentinel)
        case "rediss+sentinel": (secure, kind) = (true, .sentinel)
        default: throw .invalidConfiguration("unsupported scheme '\(scheme)://'")
        }

        var rest = parts[1]
        if let at = Self.credentialsEnd(in: rest) {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = Self.percentDecoded(credentials[..<colon])
                username = user.isEmpty ? nil : user
                password = Self.percentDecoded(credentials[credentials.index(after: colon)...])
            } else if !credentials.isEmpty {
                // redis://password@host is how several clients spell a password without a user.
                password = Self.percentDecoded(credentials)
            }
        }
        // An `@` left outside the query is a password's (or a name's) that the host list did not
        // follow: refused, rather than guessed (the password could go to the wrong host).
        if rest[..<Self.queryStart(in: rest)].contains("@") {
            throw .invalidConfiguration("'\(shown)' has an '@' outside its credentials: write it as %40")
        }
        var query = Substring("")
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...].prefix { $0 != "#" }
            rest = rest[..<mark]
        } else if let hash = rest.firstIndex(of: "#") {
            rest = rest[..<hash]
        }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        let defaultPort = kind == .sentinel ? 26379 : 6379
        var addresses: [HiredisAddress] = []
        for item in rest.split(separator: ",", omittingEmptySubsequences: false) {
            guard let address = HiredisAddress(parsing: item, defaultPort: defaultPort) else {
                throw .invalidConfiguration("bad host or port in '\(shown)'")
            }
            addresses.append(address)
        }
        if kind == .standalone && addresses.count != 1 {
            throw .invalidConfiguration("'\(shown)' names several hosts: use redis+cluster:// or redis+sentinel://")
        }
        host = addresses[0].host
        port = addresses[0].port

        var pathParts = path.split(separator: "/", omittingEmptySubsequences: true)
        switch kind {
        case .standalone:
            break
        case .cluster:
            topology = .cluster(seeds: addresses)
        case .sentinel:
            guard let name = pathParts.first else {
                throw .invalidConfiguration("'\(shown)' needs the primary's name: redis+sentinel://host:26379/<name>")
            }
            topology = .sentinel(sentinels: addresses, primaryName: Self.percentDecoded(name))
            pathParts.removeFirst()
        }
        if let db = pathParts.first {
            guard pathParts.count == 1, let value = Int(db), value >= 0 else {
                throw .invalidConfiguration("bad database in '\(shown)'")
            }
            if kind == .cluster && value != 0 { throw .invalidConfiguration("a cluster has only database 0") }
            database = value
        }

        var tls = secure ? HiredisTLSConfiguration() : nil
        var sentinelTLSOptions: [(name: Substring, value: String)] = []
        var sentinelTLSSwitch: Bool?
        for pair in query.split(separator: "&") {
            let item = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = item[0]
            let value = item.count == 2 ? Self.percentDecoded(item[1]) : ""
            // An option's name is shown only if it looks like one (a misplaced password can end up here).
            let shownName =
                name.count <= 32 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0 == "_") } ? String(name) : "an option"
            if name.hasPrefix("sentinel_") {
                guard kind == .sentinel else { throw .invalidConfiguration("\(shownName) needs a redis+sentinel:// URL") }
                switch name {
                case "sentinel_username": sentinelUsername = value.isEmpty ? nil : value
                case "sentinel_password": sentinelPassword = value.isEmpty ? nil : value
                case "sentinel_discovery":
                    guard value == "on" || value == "off" else { throw .invalidConfiguration("sentinel_discovery must be on or off") }
                    discoverSentinels = value == "on"
                case "sentinel_tls":
                    guard value == "on" || value == "off" else { throw .invalidConfiguration("sentinel_tls must be on or off") }
                    sentinelTLSSwitch = value == "on"
                case _ where name.hasPrefix("sentinel_tls_"): sentinelTLSOptions.append((name.dropFirst("sentinel_".count), value))
                default: throw .invalidConfiguration("unknown option \(shownName)")
                }
                continue
            }
            guard name.hasPrefix("tls_") else { continue }
            guard tls != nil else { throw .invalidConfiguration("\(shownName) needs a rediss:// URL") }
            try Self.apply(tlsOption: name, value: value, shownName: shownName, to: &tls)
        }
        self.tls = tls
        if sentinelTLSSwitch == false {
            guard sentinelTLSOptions.isEmpty else { throw .invalidConfiguration("sentinel_tls=off with sentinel_tls_ options") }
            sentinelTLS = .off
        } else if sentinelTLSSwitch == true || !sentinelTLSOptions.isEmpty {
            var sentinels: HiredisTLSConfiguration? = tls ?? HiredisTLSConfiguration()
            for option in sentinelTLSOptions {
                try Self.apply(tlsOption: option.name, value: option.value, shownName: "sentinel_" + option.name, to: &sentinels)
            }
            sentinelTLS = .on(sentinels ?? HiredisTLSConfiguration())
        }
    }

    /// Sets one `tls_` option of a URL's query.
    private static func apply(
        tlsOption name: Substring, value: String, shownName: String, to tls: inout HiredisTLSConfiguration?
    )
        throws(HiredisError)
    {
        switch name {
        case "tls_ca_file": tls?.caFile = value
        case "tls_cert_file": tls?.certificateFile = value
        case "tls_key_file": tls?.privateKeyFile = value
        case "tls_server_name": tls?.serverName = value
        case "tls_verify":
            guard let verification = HiredisTLSConfiguration.Verification(rawValue: value) else {
                throw .invalidConfiguration("\(shownName) must be full, no_hostname or none")
            }
            tls?.verification = verification
        default: throw .invalidConfiguration("unknown option \(shownName)")
        }
    }

    /// `url` with any user and password replaced by `***`, for messages and logs.
    ///
    /// Passwords are often pasted unencoded, and base64 ones contain `/` (and may contain `?`,
    /// `#` or `@`): the credentials are what comes before the `@` that starts the host list,
    /// found as ``init(url:)`` finds it. Whatever cannot be told apart is redacted.
    public static func redacted(_ url: String) -> String {
        // The query's passwords first: one may hold an `@`, which the credentials' search would
        // take for the end of the credentials (and then show what follows it).
        redactingCredentials(redactingQueryPasswords(url))
    }

    private static func redactingCredentials(_ url: String) -> String {
        // Bytes, not Characters: a combining mark after `@` (or `/`) makes one Character of both,
        // and a Character search then finds no `@` at all (the fuzzer's find). An ASCII byte never
        // stands inside a multi-byte sequence, so cutting there keeps valid UTF-8.
        let bytes = Array(url.utf8)
        // Everything before the last `@`, wherever it stands: a URL that does not parse may have
        // its password anywhere before it (an `@` in a query only costs some of what is shown).
        guard let at = bytes.lastIndex(of: UInt8(ascii: "@")) else { return url }
        let tail = String(decoding: bytes[at...], as: UTF8.self)
        let separator = Array("://".utf8)
        guard let schemeEnd = (0..<at).first(where: { bytes[$0...].starts(with: separator) }) else { return "***" + tail }
        return String(decoding: bytes[..<(schemeEnd + 3)], as: UTF8.self) + "***" + tail
    }

    /// `url` with the value of every `password=` in it (`sentinel_password`, in any case)
    /// replaced by `***`, up to the next `&`, wherever it stands: a URL that does not parse may
    /// have put it anywhere, and a pasted password may hold a `#`.
    private static func redactingQueryPasswords(_ url: String) -> String {
        let bytes = Array(url.utf8)
        let marker = Array("password=".utf8)
        var output: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let next = bytes[index...].prefix(marker.count).map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
            if next.elementsEqual(marker) {
                output += bytes[index..<(index + marker.count)] + Array("***".utf8)
                index += marker.count
                while index < bytes.count, bytes[index] != UInt8(ascii: "&") { index += 1 }
            } else {
                output.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Where the credentials of a URL's part after `scheme://` end: the last `@` followed by a
    /// host list (`host[:port][,host[:port]...]`, up to `/`, `?`, `#` or the end) and not inside
    /// the query (which starts at the first `?name=`). nil: no credentials.
    ///
    /// The last such `@`, not the first `/`: `redis://app:s3cr/et@10.0.0.5/0` has the password
    /// `s3cr/et` (cutting the authority at the first `/` showed it in "bad host" errors).
    static func credentialsEnd(in rest: Substring) -> Substring.Index? {
        let queryStart = Self.queryStart(in: rest)
        var candidate = rest[..<queryStart].lastIndex(of: "@")
        while let at = candidate {
            let hosts = rest[rest.index(after: at)...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
            if isHostList(hosts) { return at }
            candidate = rest[..<at].lastIndex(of: "@")
        }
        return nil
    }

    /// The first `?` followed by an option name and `=`: where a URL's query starts (a `?` in a
    /// pasted password is seldom followed by that).
    static func queryStart(in rest: Substring) -> Substring.Index {
        var searchFrom = rest.startIndex
        while let mark = rest[searchFrom...].firstIndex(of: "?") {
            let name = rest[rest.index(after: mark)...].prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            if !name.isEmpty, rest[name.endIndex...].hasPrefix("=") { return mark }
            searchFrom = rest.index(after: mark)
        }
        return rest.endIndex
    }

    /// `host[:port]` or `[v6]:port` items separated by commas, in the characters host names and
    /// addresses use.
    private static func isHostList(_ text: Substring) -> Bool {
        !text.isEmpty
            && text.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { item in
                !item.isEmpty
                    && item.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || ".-_:[]%".contains($0)) }
                    && HiredisAddress(parsing: item, defaultPort: 6379) != nil
            }
    }

    /// `host:port`, for messages.
    public var address: String { HiredisAddress(host: host, port: port).description }

    /// This configuration aimed at one node (`host:port`) of a cluster or Sentinel setup.
    public func forNode(_ address: String) -> HiredisConfiguration {
        var copy = self
        if let parsed = HiredisAddress(parsing: Substring(address), defaultPort: port) {
            copy.host = parsed.host
            copy.port = parsed.port
        }
        copy.topology = .standalone
        return copy
    }

    /// How long to wait for a connection or a topology: the connect timeout plus the longest
    /// back-off, or less when the caller's `deadline` comes first; then the error that ends the
    /// wait is a timeout of a command not written (`expiry`), else nil (the waiter's own error).
    func waitLimit(deadline: ContinuousClock.Instant?) -> (limit: Duration, expiry: HiredisError?) {
        let limit = connectTimeout + reconnectMaximumDelay
        guard let deadline, deadline - .now < limit else { return (limit, nil) }
        let left = max(.zero, deadline - .now)
        return (left, .timedOut(after: left, written: false))
    }

    func validate() throws(HiredisError) {
        try replyLimits.validate()
        if poolSize < 1 { throw .invalidConfiguration("poolSize must be at least 1") }
        if connectTimeout <= .zero || commandTimeout <= .zero {
            throw .invalidConfiguration("timeouts must be positive")
        }
        if let interval = healthCheckInterval, interval <= .zero {
            throw .invalidConfiguration("healthCheckInterval must be positive")
        }
        // A zero interval or delay would be a busy loop against Redis.
        if reconnectInitialDelay <= .zero || reconnectMaximumDelay < reconnectInitialDelay {
            throw .invalidConfiguration("reconnectInitialDelay must be positive and at most reconnectMaximumDelay")
        }
        if topologyRefreshInterval <= .zero { throw .invalidConfiguration("topologyRefreshInterval must be positive") }
        if maximumPendingCommands < 1 || maximumRedirections < 1 {
            throw .invalidConfiguration("maximumPendingCommands and maximumRedirections must be at least 1")
        }
        switch topology {
        case .standalone: break
        case .cluster(let seeds):
            if seeds.isEmpty { throw .invalidConfiguration("a cluster needs at least one seed node") }
            if database != 0 { throw .invalidConfiguration("a cluster has only database 0") }
        case .sentinel(let sentinels, let name):
            if sentinels.isEmpty || name.isEmpty { throw .invalidConfiguration("Sentinel needs sentinels and a primary name") }
        }
    }

    static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A server's host and port.
public struct HiredisAddress: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address.
    public var host: String
    /// TCP port.
    public var port: Int

    /// An address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, `[v6]:port`, or `host` with `defaultPort`; nil when malformed.
    init?(parsing text: Substring, defaultPort: Int) {
        var hostPart = text
        var port = defaultPort
        if hostPart.hasPrefix("["), let close = hostPart.firstIndex(of: "]") {
            host = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            hostPart = hostPart[hostPart.index(after: close)...]
            if hostPart.hasPrefix(":") {
                guard let value = Int(hostPart.dropFirst()) else { return nil }
                port = value
            } else if !hostPart.isEmpty {
                return nil
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = String(hostPart[..<colon])
            guard let value = Int(hostPart[hostPart.index(after: colon)...]) else { return nil }
            port = value
        } else {
            host = String(hostPart)
        }
        guard (1...65535).contains(port) else { return nil }
        if host.isEmpty { host = "127.0.0.1" }
        self.port = port
    }

    /// `host:port` (`[host]:port` for IPv6).
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension Duration {
    /// The duration as a `TimeAmount` for NIO, saturating at about ±292 years (never a trap).
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .nanoseconds(seconds < 0 ? .min : .max) }
        let (sum, overflowSum) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return .nanoseconds(overflowSum ? (seconds < 0 ? .min : .max) : sum)
    }

    /// Whole milliseconds, rounded up (a TTL of 1.5 ms must not become 1 ms), saturating at
    /// `Int.min`/`Int.max`: a duration of `.seconds(Int64.max)` gives `Int.max`, never a trap
    /// (Redis then refuses the value with an error reply).
    public var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        let fraction = attoseconds / 1_000_000_000_000_000
        let rest = attoseconds % 1_000_000_000_000_000
        let (whole, overflow) = Int(seconds).multipliedReportingOverflow(by: 1000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflowSum) = whole.addingReportingOverflow(Int(fraction) + (rest > 0 ? 1 : 0))
        return overflowSum ? .max : sum
    }
}
