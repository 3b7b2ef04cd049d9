import Foundation
import HiredisNIO
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A real `redis-server` on a free 127.0.0.1 port with its own temporary directory: for tests,
/// benchmarks and the embedded default of the command-line tools.
///
/// ```swift
/// try await RedisServer.with(.init(notifyKeyspaceEvents: "Ex")) { server in
///     let client = try HiredisClient.started(configuration: server.configuration)
///     ...
/// }
/// ```
///
/// The server writes its pid to `redis.pid` in its directory (`/tmp/ssc-redis-*`), next to
/// `owner.pid`, the pid of the process that started it, so a test runner that crashed can be
/// cleaned up after (`scripts/test` does; so does the next process that starts a server), while
/// the servers of processes still running are left alone. Servers still running when their
/// process exits are killed.
public final class RedisServer: @unchecked Sendable {
    /// How the server is started.
    public struct Options: Sendable {
        /// `notify-keyspace-events`; nil leaves notifications off.
        public var notifyKeyspaceEvents: String?
        /// `appendonly yes`, with ``appendFsync``.
        public var appendOnly: Bool
        /// `appendfsync` when ``appendOnly``: `everysec` (the default: a crash may lose the last
        /// second of writes) or `always` (nothing acknowledged is lost).
        public var appendFsync = "everysec"
        /// `requirepass`.
        public var password: String?
        /// Any other `--name value` options.
        public var extra: [(String, String)]
        /// Further raw command-line arguments, for options with several values
        /// (`["--rename-command", "CONFIG", ""]`).
        public var arguments: [String]
        /// The executable, found on PATH or in /usr/bin by default.
        public var executable: String
        /// TLS only (`--port 0 --tls-port`), with these certificates; clients must present one
        /// signed by the same authority (mutual TLS).
        public var tls: TLSCertificates?
        /// Lines of a configuration file written to the server's directory and passed first
        /// (Sentinel needs a file it can rewrite).
        public var configurationFile: [String]?
        /// Runs as a Sentinel (`--sentinel`).
        public var sentinel: Bool = false
        /// With ``tls``, a plaintext port as well (the server's ``RedisServer/address`` stays the
        /// TLS one): a node that lists both ports to every client, as Redis 7.2+ does whenever
        /// both are configured.
        public var plaintextPortToo: Bool = false
        /// `bind-source-addr` (`"127.0.0.12"`): the server's own connections to other servers
        /// (replication, the cluster bus) come from it, so that a ``FaultProxy/isolatedSources``
        /// set can tell them apart. Linux routes all of 127/8 to the loopback interface.
        public var sourceAddress: String?
        /// Environment variables set for the server on top of this process's (a test shim's
        /// `LD_PRELOAD`, for instance).
        public var environment: [String: String] = [:]

        /// Options; the defaults give a throwaway server with expired-key events on.
        public init(
            notifyKeyspaceEvents: String? = "Ex", appendOnly: Bool = false, password: String? = nil,
            extra: [(String, String)] = [], arguments: [String] = [], executable: String? = nil,
            tls: TLSCertificates? = nil
        ) {
            self.tls = tls
            self.notifyKeyspaceEvents = notifyKeyspaceEvents
            self.appendOnly = appendOnly
            self.password = password
            self.extra = extra
            self.arguments = arguments
            self.executable = executable ?? RedisServer.findExecutable("redis-server")
        }
    }

    /// An error starting the server.
    public struct StartError: Error, CustomStringConvertible {
        public let description: String

        public init(description: String) {
            self.description = description
        }
    }

    /// The options it runs with.
    public let options: Options
    /// Its temporary directory (data, append-only file, pid file).
    public let directory: URL
    private let lock = NIOLock()
    private var _port: Int
    private var process: ChildProcess?
    private var output = ""

    /// The port it listens on (127.0.0.1).
    public var port: Int { lock.withLock { _port } }

    /// `redis://[:password@]127.0.0.1:port` (`rediss://...` with the certificates as query
    /// options for a TLS server).
    public var url: String {
        let scheme = options.tls == nil ? "redis" : "rediss"
        let credentials = options.password.map { ":\($0)@" } ?? ""
        var url = "\(scheme)://\(credentials)127.0.0.1:\(port)"
        if let tls = options.tls {
            url += "?tls_ca_file=\(tls.caFile)&tls_cert_file=\(tls.clientCertificateFile)&tls_key_file=\(tls.clientKeyFile)"
        }
        return url
    }

    /// A client configuration pointing at the server (with its password and client
    /// certificate, if any).
    public var configuration: HiredisConfiguration {
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: port)
        configuration.password = options.password
        if let tls = options.tls { configuration.tls = tls.clientConfiguration }
        return configuration
    }

    /// The `host:port` clients connect to.
    public var address: HiredisAddress { HiredisAddress(host: "127.0.0.1", port: port) }

    /// The process id, while running.
    public var pid: Int32? { lock.withLock { process?.isRunning == true ? process?.pid : nil } }

    private init(options: Options, directory: URL, port: Int) {
        self.options = options
        self.directory = directory
        self._port = port
    }

    deinit {
        process?.send(SIGKILL)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts a server and waits until it accepts connections.
    public static func start(_ options: Options = Options()) async throws -> RedisServer {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ssc-redis-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Its owner: a server is reaped (ServerReaper, scripts/test) only once this process is gone.
        try "\(getpid())\n".write(to: directory.appendingPathComponent("owner.pid"), atomically: true, encoding: .utf8)
        var lastError: (any Error)?
        // A free port can be taken by someone else before redis-server binds it: try a few.
        for _ in 0..<5 {
            let server = RedisServer(options: options, directory: directory, port: try freePort())
            do {
                try await server.launch()
                return server
            } catch {
                lastError = error
                // A server that did not come up must not linger (and hold the port or the CPU).
                let failed = server.lock.withLock { () -> ChildProcess? in
                    defer { server.process = nil }
                    return server.process
                }
                failed?.send(SIGKILL)
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw lastError ?? StartError(description: "redis-server did not start")
    }

    /// Starts a server, runs `body`, and stops the server and removes its files, also when
    /// `body` throws.
    public static func with<T: Sendable>(_ options: Options = Options(), _ body: (RedisServer) async throws -> T) async throws -> T {
        try await withStarted(try await start(options), stop: { await $0.stop() }, body)
    }

    /// Stops the server (SIGTERM, SIGKILL after 5 s) and removes its directory.
    public func stop() async {
        if let process = lock.withLock({ process }), process.isRunning {
            process.send(SIGCONT)
            process.send(SIGTERM)
            if !(await process.waitForExit(timeout: .seconds(5))) {
                process.send(SIGKILL)
                await process.waitForExit(timeout: .seconds(5))
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Kills the server with SIGKILL (no shutdown, no final fsync) and waits for it to exit.
    public func kill() async {
        guard let process = lock.withLock({ process }), process.isRunning else { return }
        process.send(SIGKILL)
        await process.waitForExit(timeout: .seconds(10))
    }

    /// Starts the server again on the same port and directory (after ``kill()``), loading its
    /// data (append-only file) as a real restart would.
    public func restart() async throws {
        await kill()
        try await launch()
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers nothing.
    public func pause() {
        if let pid { Glibc.kill(pid, SIGSTOP) }
    }

    /// Thaws a paused server (SIGCONT).
    public func resume() {
        if let pid { Glibc.kill(pid, SIGCONT) }
    }

    /// What the server printed so far (its log), for failure messages.
    public var log: String { lock.withLock { output } }

    private func launch() async throws {
        var arguments: [String] = []
        if let lines = options.configurationFile {
            let file = directory.appendingPathComponent(options.sentinel ? "sentinel.conf" : "redis.conf")
            if !FileManager.default.fileExists(atPath: file.path) {
                try lines.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
            }
            arguments.append(file.path)
        }
        if options.sentinel { arguments.append("--sentinel") }
        if let tls = options.tls {
            arguments += [
                "--port", options.plaintextPortToo ? "\(try RedisServer.freePort())" : "0", "--tls-port", "\(port)", "--tls-cert-file",
                tls.serverCertificateFile,
                "--tls-key-file", tls.serverKeyFile, "--tls-ca-cert-file", tls.caFile, "--tls-auth-clients", "yes",
            ]
        } else {
            arguments += ["--port", "\(port)"]
        }
        arguments += [
            "--bind", "127.0.0.1", "--dir", directory.path,
            "--pidfile", directory.appendingPathComponent("redis.pid").path,
            "--save", "", "--daemonize", "no", "--logfile", "", "--loglevel", "notice",
            "--protected-mode", "no",
        ]
        if let events = options.notifyKeyspaceEvents { arguments += ["--notify-keyspace-events", events] }
        if options.appendOnly { arguments += ["--appendonly", "yes", "--appendfsync", options.appendFsync] }
        if let password = options.password { arguments += ["--requirepass", password] }
        if let source = options.sourceAddress { arguments += ["--bind-source-addr", source] }
        for (name, value) in options.extra { arguments += ["--\(name)", value] }
        arguments += options.arguments

        let ready = NIOLockedValueBox<CheckedContinuation<Void, any Error>?>(nil)
        let finish: @Sendable (Result<Void, any Error>) -> Void = { result in
            ready.withLockedValue { value in
                defer { value = nil }
                return value
            }?.resume(with: result)
        }
        let port = self.port
        lock.withLock { output = "" }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            ready.withLockedValue { $0 = continuation }
            do {
                let environment =
                    options.environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(options.environment) { $1 }
                let process = try ChildProcess(executable: options.executable, arguments: arguments, environment: environment) {
                    [weak self] line in
                    guard let self else { return }
                    self.lock.withLock {
                        self.output += line + "\n"
                        if self.output.utf8.count > 64_000 { self.output = String(self.output.suffix(32_000)) }
                    }
                    // A Sentinel never says it is ready; it is once it monitors its primary.
                    if line.contains("Ready to accept connections") || line.contains("+monitor master") {
                        finish(.success(()))
                    }
                }
                lock.withLock { self.process = process }
                ServerReaper.started(process.pid)
                Task {
                    _ = await process.waitForExit()
                    ServerReaper.exited(process.pid)
                    finish(.failure(StartError(description: "redis-server on port \(port) exited at start: \(self.log)")))
                }
            } catch {
                finish(.failure(error))
            }
            // Never wait forever: a server that has not started in 20 s is reported.
            Task {
                try? await Task.sleep(for: .seconds(20))
                finish(.failure(StartError(description: "redis-server on port \(port) not ready after 20 s: \(self.log)")))
            }
        }
    }

    /// A port on 127.0.0.1 that was free a moment ago.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartError(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw StartError(description: "bind() failed") }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw StartError(description: "getsockname() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The path of a program on PATH, or `/usr/bin/NAME`.
    public static func findExecutable(_ name: String) -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "/usr/bin/\(name)"
    }
}
