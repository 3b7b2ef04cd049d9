import CoreMetrics
import Logging
import NIOCore
import NIOPosix

/// How to reach Redis and how to behave when it misbehaves.
///
/// ```swift
/// var configuration = try HiredisConfiguration(url: "redis://app:secret@127.0.0.1:6379/2")
/// configuration.commandTimeout = .seconds(2)
/// ```
public struct HiredisConfiguration: Sendable {
    /// Host name or address.
    public var host: String = "127.0.0.1"
    /// TCP port.
    public var port: Int = 6379
    /// ACL user name; with a password only, `AUTH password` is sent.
    public var username: String? = nil
    /// Password for `AUTH`.
    public var password: String? = nil
    /// Database for `SELECT` (sent when not 0).
    public var database: Int = 0
    /// Name for `CLIENT SETNAME`, so operators can tell connections apart in `CLIENT LIST`.
    public var clientName: String? = "swift-session-cache"
    /// Connections that share the command load; concurrent commands on one connection are pipelined.
    public var poolSize: Int = 2
    /// How long to wait for TCP connect plus the handshake (AUTH, SELECT, CLIENT SETNAME).
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command waits for its reply.
    public var commandTimeout: Duration = .seconds(5)
    /// Delay before the first reconnect attempt after a connection is lost; doubled after each
    /// failed attempt up to ``reconnectMaximumDelay``.
    public var reconnectInitialDelay: Duration = .milliseconds(20)
    /// The cap of the reconnect delay.
    public var reconnectMaximumDelay: Duration = .seconds(1)
    /// Where the client logs (connects, disconnects, protocol errors), never per command.
    public var logger: Logger = Logger(label: "redis-client", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Where the client records `redis.commands`, `redis.errors` and `redis.command.duration`.
    /// Defaults to the factory the application bootstrapped (`MetricsSystem.bootstrap`).
    public var metricsFactory: any MetricsFactory = MetricsSystem.factory
    /// The event loops connections run on.
    public var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

    /// A configuration for `host:port` with every other setting at its default.
    public init(host: String = "127.0.0.1", port: Int = 6379) {
        self.host = host
        self.port = port
    }

    /// A configuration from a `redis://[[user]:password@]host[:port][/db]` URL.
    ///
    /// `rediss://` (TLS) is refused with ``HiredisError/invalidConfiguration(_:)``: this client
    /// does not speak TLS yet, and silently downgrading would leak credentials.
    public init(url: String) throws(HiredisError) {
        // Errors name the URL without its credentials.
        let shown = Self.redacted(url)
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw .invalidConfiguration("'\(shown)' is not a redis:// URL")
        }
        let scheme = parts[0].lowercased()
        if scheme == "rediss" {
            throw .invalidConfiguration("rediss:// (TLS) is not supported yet; use redis:// over a trusted network or a TLS tunnel")
        }
        guard scheme == "redis" else { throw .invalidConfiguration("unsupported scheme '\(scheme)://'") }

        var rest = parts[1]
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) { rest = rest[..<query] }
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
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
        var hostPart = rest
        if hostPart.hasPrefix("["), let close = hostPart.firstIndex(of: "]") {  // [::1]:6379
            host = String(hostPart[hostPart.index(after: hostPart.startIndex)..<close])
            hostPart = hostPart[hostPart.index(after: close)...]
            if hostPart.hasPrefix(":") {
                guard let value = Int(hostPart.dropFirst()), (1...65535).contains(value) else {
                    throw .invalidConfiguration("bad port in '\(shown)'")
                }
                port = value
            }
        } else if let colon = hostPart.lastIndex(of: ":") {
            host = String(hostPart[..<colon])
            guard let value = Int(hostPart[hostPart.index(after: colon)...]), (1...65535).contains(value) else {
                throw .invalidConfiguration("bad port in '\(shown)'")
            }
            port = value
        } else {
            host = String(hostPart)
        }
        if host.isEmpty { host = "127.0.0.1" }
        if !path.isEmpty {
            guard let db = Int(path), db >= 0 else { throw .invalidConfiguration("bad database '\(path)' in '\(shown)'") }
            database = db
        }
    }

    /// `url` with any user and password replaced by `***`, for messages and logs.
    public static func redacted(_ url: String) -> String {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return url.contains("@") ? "***" : url }
        let authority = parts[1].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard let at = authority.lastIndex(of: "@") else { return url }
        return parts[0] + "://***" + parts[1][at...]
    }

    /// `host:port`, for messages.
    public var address: String { "\(host):\(port)" }

    func validate() throws(HiredisError) {
        if poolSize < 1 { throw .invalidConfiguration("poolSize must be at least 1") }
        if connectTimeout <= .zero || commandTimeout <= .zero {
            throw .invalidConfiguration("timeouts must be positive")
        }
    }

    private static func percentDecoded(_ text: Substring) -> String {
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

extension Duration {
    /// The duration as a `TimeAmount` for NIO.
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Whole milliseconds, rounded up (a TTL of 1.5 ms must not become 1 ms).
    public var wholeMilliseconds: Int {
        let (seconds, attoseconds) = components
        let fraction = attoseconds / 1_000_000_000_000_000
        let rest = attoseconds % 1_000_000_000_000_000
        return Int(seconds) * 1000 + Int(fraction) + (rest > 0 ? 1 : 0)
    }
}
