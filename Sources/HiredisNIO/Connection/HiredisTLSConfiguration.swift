import NIOCore
import NIOSSL

/// TLS for connections to Redis (`rediss://`), through swift-nio-ssl.
///
/// Verification is on by default: the server's certificate must chain to ``caFile`` (or the
/// system's trust roots) and name the host (or ``serverName``). Mutual TLS: set
/// ``certificateFile`` and ``privateKeyFile``.
///
/// ```swift
/// var configuration = HiredisConfiguration(host: "redis.internal", port: 6380)
/// configuration.tls = HiredisTLSConfiguration(caFile: "/etc/redis/ca.crt")
/// configuration.tls?.certificateFile = "/etc/redis/client.crt"
/// configuration.tls?.privateKeyFile = "/etc/redis/client.key"
/// ```
public struct HiredisTLSConfiguration: Sendable, Hashable {
    /// How much of the server's certificate is checked.
    public enum Verification: String, Sendable, Hashable {
        /// The chain and the host name (the default).
        case full
        /// The chain only: for servers reached by an address their certificate does not name.
        case noHostname = "no_hostname"
        /// Nothing: encryption without authentication. Only for tests.
        case none
    }

    /// PEM file of the certificate authorities to trust; nil for the system's trust roots.
    public var caFile: String?
    /// PEM file of the client certificate (mutual TLS).
    public var certificateFile: String?
    /// PEM file of the client certificate's private key.
    public var privateKeyFile: String?
    /// The name to ask for (SNI) and to verify; nil for the host connected to.
    public var serverName: String?
    /// How much to verify.
    public var verification: Verification = .full

    /// TLS trusting `caFile` (nil: the system's roots), with full verification.
    public init(caFile: String? = nil) {
        self.caFile = caFile
    }

    /// The swift-nio-ssl context: files are read here, so a missing or malformed one is an
    /// ``HiredisError/Code/invalidConfiguration`` error.
    func makeContext() throws(HiredisError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        switch verification {
        case .full: tls.certificateVerification = .fullVerification
        case .noHostname: tls.certificateVerification = .noHostnameVerification
        case .none: tls.certificateVerification = .none
        }
        do {
            if let caFile { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) }
            if let certificateFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            }
            if let privateKeyFile { tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem)) }
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw .invalidConfiguration("TLS files could not be loaded: \(error)")
        }
    }

    /// The handler to put first in a connection's pipeline.
    func makeHandler(context: NIOSSLContext, host: String) throws(HiredisError) -> NIOSSLClientHandler {
        // SNI must not be an IP address.
        let name = serverName ?? (host.isIPAddress ? nil : host)
        do {
            return try NIOSSLClientHandler(context: context, serverHostname: name)
        } catch {
            throw .invalidConfiguration("TLS server name '\(name ?? host)': \(error)")
        }
    }
}

extension String {
    /// Whether this is an IPv4 or IPv6 literal (no SNI for those).
    var isIPAddress: Bool {
        if contains(":") { return true }
        let parts = split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
    }
}
