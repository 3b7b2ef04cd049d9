import Foundation
import HiredisNIO

/// A throwaway certificate authority with a server certificate (for 127.0.0.1 and localhost)
/// and a client certificate, made with `openssl` for TLS tests.
///
/// ```swift
/// let certificates = try await TLSCertificates.make()
/// try await RedisServer.with(.init(tls: certificates)) { server in
///     let client = try HiredisClient.started(configuration: server.configuration)  // rediss, mutual TLS
/// }
/// ```
public struct TLSCertificates: Sendable {
    /// The directory holding the files.
    public let directory: String
    /// The authority's certificate (PEM): what clients and the server trust.
    public var caFile: String { directory + "/ca.crt" }
    /// The server's certificate, naming IP 127.0.0.1 and DNS localhost.
    public var serverCertificateFile: String { directory + "/server.crt" }
    /// The server certificate's key.
    public var serverKeyFile: String { directory + "/server.key" }
    /// A client certificate signed by the same authority (mutual TLS).
    public var clientCertificateFile: String { directory + "/client.crt" }
    /// The client certificate's key.
    public var clientKeyFile: String { directory + "/client.key" }

    /// Client TLS that trusts ``caFile`` and presents the client certificate.
    public var clientConfiguration: HiredisTLSConfiguration {
        var tls = HiredisTLSConfiguration(caFile: caFile)
        tls.certificateFile = clientCertificateFile
        tls.privateKeyFile = clientKeyFile
        return tls
    }

    /// Makes a new authority and its certificates in a new temporary directory.
    public static func make() async throws -> TLSCertificates {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ssc-tls-\(UUID().uuidString.prefix(8))").path
        // Only this user may read the keys: the directory is 0700, and every file is made 0600
        // (umask 077) rather than widened after it was written.
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // One authority, two leaf certificates; EC keys keep it quick.
        let script = """
            set -e
            umask 077
            chmod 700 '\(directory)'
            cd '\(directory)'
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext
            printf 'extendedKeyUsage=clientAuth\\n' > client.ext
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
              -subj '/CN=Session Cache Test CA' -keyout ca.key -out ca.crt 2>&1
            for leaf in server client; do
              openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj "/CN=$leaf" -keyout $leaf.key -out $leaf.csr 2>&1
              openssl x509 -req -in $leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
                -extfile $leaf.ext -out $leaf.crt 2>&1
            done
            chmod 600 *.key
            """
        let (status, output) = try await ChildProcess.run(RedisServer.findExecutable("sh"), ["-c", script])
        guard status == 0 else {
            throw RedisServer.StartError(description: "openssl failed (\(status)): \(output)")
        }
        return TLSCertificates(directory: directory)
    }

    /// Removes the files.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
