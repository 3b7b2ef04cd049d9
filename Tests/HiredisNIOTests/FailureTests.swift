@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOCore
import TestSupport
import Testing

@Suite("Failures: timeouts, lost servers, authentication, bad peers")
struct FailureTests {
    @Test func timedOutCommandsDoNotShiftLaterReplies() async throws {
        try await withRedis(configure: {
            $0.commandTimeout = .milliseconds(300); $0.poolSize = 1
        }) { server, client in
            try await client.set("a", to: "value-a")
            server.pause()
            // Both are written to the socket and get no answer while the server is frozen.
            async let first = expectRedisError { _ = try await client.get("a") }
            async let second = expectRedisError { _ = try await client.send(RESPCommand("ECHO", "late")) }
            let start = ContinuousClock.now
            let errors = await [first, second]
            #expect(start.elapsed < .seconds(3))
            // The first deadline times out; the silent connection is then closed as dead, so a
            // command whose deadline was microseconds later may fail as connectionLost. The
            // command appended first is written at once ("it may have run"); the other may still
            // wait in the outbox behind it when the connection closes, and then says, exactly,
            // that it never went out.
            for error in errors {
                guard let error, error.code == .timedOut || error.code == .connectionLost else {
                    Issue.record("expected timedOut or connectionLost, got \(String(describing: error))")
                    continue
                }
            }
            #expect(errors.contains { $0?.commandMayHaveRun == true })
            server.resume()
            // The late replies ("value-a", "late") arrive now and must be dropped, not handed on.
            // (A generous timeout: the first command after the pause waits for a new connection,
            // and a busy CI host has stalled longer than 300 ms.)
            let patient = Duration.seconds(5)
            #expect(try await client.send(RESPCommand("ECHO", "mine"), timeout: patient).string == "mine")
            #expect(try await client.send(RESPCommand("INCR", "n"), timeout: patient) == .integer(1))
            #expect(try await client.send(RESPCommand("GET", "a"), timeout: patient).string == "value-a")
        }
    }

    @Test func aFrozenServerIsPresumedDeadAndNothingWaitsForTheKernel() async throws {
        try await withRedis(configure: {
            $0.commandTimeout = .milliseconds(300); $0.connectTimeout = .milliseconds(400); $0.poolSize = 1
        }) { server, client in
            try await client.set("a", to: "1")
            server.pause()
            // The command in flight times out with not one byte back: the connection is closed as
            // dead. What comes next fails within the connect timeout (the frozen server accepts
            // TCP but never answers the handshake), never queued behind the dead connection.
            let first = await expectRedisError { _ = try await client.get("a") }
            #expect(first?.code == .timedOut && first?.commandMayHaveRun == true)
            let start = ContinuousClock.now
            let late = await expectRedisError { _ = try await client.send(RESPCommand("ECHO", "queued")) }
            #expect(late?.code == .cannotConnect || late?.code == .timedOut, "\(String(describing: late))")
            #expect(start.elapsed < .seconds(2))
            server.resume()
            // The pool's next attempt reaches the resumed server.
            var answered = false
            for _ in 0..<20 where !answered {
                answered = (try? await client.send(RESPCommand("ECHO", "after")).string) == "after"
                if !answered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answered)
        }
    }

    /// A command that waits behind a blocking one on the same connection times out "never sent"
    /// at its deadline; the connection is busy, not dead: it stays open and the blocking command
    /// gets its reply. (Before, the waiting command was written at its deadline, found overdue at
    /// once with no byte since, and the connection closed as dead, failing the blocking command.)
    @Test func aCommandQueuedBehindABlockingOneTimesOutUnsentAndTheConnectionLives() async throws {
        try await withRedis(configure: {
            $0.commandTimeout = .milliseconds(300); $0.poolSize = 1
        }) { server, client in
            let other = try HiredisClient.started(configuration: server.configuration)
            async let popped = client.send(RESPCommand("BLPOP", "jobs", "5"), timeout: .seconds(10))
            // Blocked in the server before the next command is sent.
            var blocked = false
            for _ in 0..<200 where !blocked {
                let info = RedisInfo(try await other.send(RESPCommand("INFO", "clients")).string ?? "")
                blocked = info.number("blocked_clients") == 1
                if !blocked { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(blocked)
            let error = await expectRedisError { _ = try await client.send(RESPCommand("INCR", "counter")) }
            #expect(error?.code == .timedOut && error?.commandMayHaveRun == false, "\(String(describing: error))")
            _ = try await other.send(RESPCommand("RPUSH", "jobs", "job-1"))
            #expect(try await popped.array?.compactMap(\.string) == ["jobs", "job-1"])
            // The INCR that timed out "never sent" never ran.
            #expect(try await client.send(RESPCommand("GET", "counter")) == .null)
            await other.close()
        }
    }

    @Test func inFlightCommandsFailAtOnceWhenTheServerDiesAndThePoolReconnects() async throws {
        try await withRedis(
            .init(appendOnly: true),
            configure: {
                $0.commandTimeout = .seconds(10); $0.poolSize = 2
            }
        ) { server, client in
            try await client.set("before", to: "1")
            server.pause()
            let start = ContinuousClock.now
            async let inFlight = expectRedisError { _ = try await client.send(RESPCommand("PING")) }
            try await Task.sleep(for: .milliseconds(50))  // let the command reach the socket
            await server.kill()
            let error = await inFlight
            guard error?.code == .connectionLost else {
                Issue.record("expected connectionLost, got \(String(describing: error))")
                return
            }
            #expect(start.elapsed < .seconds(5), "failed at once, not after the 10 s timeout")

            // While the server is down: a typed error, promptly.
            let down = await expectRedisError { _ = try await client.send(RESPCommand("PING")) }
            #expect(down != nil)

            try await server.restart()
            #expect(try await client.send(RESPCommand("PING")) == .simpleString("PONG"))
            // Every pooled connection is back.
            for index in 0..<10 { #expect(try await client.send(RESPCommand("ECHO", .string("\(index)"))).string == "\(index)") }
        }
    }

    @Test func wrongAndMissingPasswordsGiveTypedErrors() async throws {
        try await RedisServer.with(.init(password: "right-password")) { server in
            var wrong = server.configuration
            wrong.password = "wrong"
            let wrongClient = try HiredisClient.started(configuration: wrong)
            let wrongError = await expectRedisError { _ = try await wrongClient.send(RESPCommand("PING")) }
            #expect(wrongError?.serverCode == "WRONGPASS")
            await wrongClient.close()

            var missing = server.configuration
            missing.password = nil
            let missingClient = try HiredisClient.started(configuration: missing)
            let missingError = await expectRedisError { _ = try await missingClient.send(RESPCommand("PING")) }
            #expect(missingError?.serverCode == "NOAUTH")
            await missingClient.close()

            let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: server.url + "/2"))
            #expect(try await client.send(RESPCommand("PING")) == .simpleString("PONG"))
            #expect(try await client.send(RESPCommand("CLIENT", "GETNAME")).string == "swift-session-cache")
            // SELECT 2 from the URL took effect.
            try await client.set("in-db-2", to: "x")
            let info = try await client.send(RESPCommand("INFO", "keyspace")).string ?? ""
            #expect(info.contains("db2:keys=1"))
            await client.close()
        }
    }

    @Test func aclUserAndPassword() async throws {
        try await withRedis { server, admin in
            _ = try await admin.send(RESPCommand("ACL", "SETUSER", "app", "on", ">app-secret", "~*", "+@all"))
            let client = try HiredisClient.started(
                configuration: try HiredisConfiguration(url: "redis://app:app-secret@127.0.0.1:\(server.port)"))
            #expect(try await client.send(RESPCommand("ACL", "WHOAMI")).string == "app")
            await client.close()
        }
    }

    @Test func closedPortFailsWithinTheConnectTimeout() async throws {
        let port = try RedisServer.freePort()
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: port)
        configuration.connectTimeout = .seconds(1)
        let client = try HiredisClient.started(configuration: configuration)
        let start = ContinuousClock.now
        let error = await expectRedisError { _ = try await client.send(RESPCommand("PING")) }
        guard error?.code == .cannotConnect else {
            Issue.record("expected cannotConnect, got \(String(describing: error))")
            return
        }
        #expect(start.elapsed < .seconds(1) + .milliseconds(500))
        await client.close()
    }

    @Test func silentPeerFailsWithinTheConnectTimeout() async throws {
        let silent = try await FakeServer { _, _ in nil }
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: silent.port)
        configuration.connectTimeout = .milliseconds(400)
        let client = try HiredisClient.started(configuration: configuration)
        let start = ContinuousClock.now
        let error = await expectRedisError { _ = try await client.send(RESPCommand("PING")) }
        guard error?.code == .cannotConnect else {
            Issue.record("expected cannotConnect, got \(String(describing: error))")
            return
        }
        // The pool gives up after the connect timeout plus the longest back-off (1.4 s here); the
        // rest is slack for a busy host. Without the bound it would wait for the kernel.
        #expect(start.elapsed < .seconds(3))
        await client.close()
        await silent.close()
    }

    /// On a cluster whose nodes cannot be reached, a command's timeout bounds the whole call
    /// (waiting for a topology included: that wait alone was the connect timeout plus the longest
    /// back-off, 10 s here), and a cancelled caller stops waiting at once.
    @Test func aClusterCallIsBoundedByItsTimeoutAndByCancellation() async throws {
        let port = try RedisServer.freePort()
        var configuration = try HiredisConfiguration(url: "redis+cluster://127.0.0.1:\(port)")
        configuration.connectTimeout = .seconds(5)
        configuration.reconnectMaximumDelay = .seconds(5)
        let client = try HiredisClient.started(configuration: configuration)
        let start = ContinuousClock.now
        let error = await expectRedisError { _ = try await client.send(RESPCommand("GET", "k"), timeout: .milliseconds(300)) }
        #expect(error != nil)
        #expect(start.elapsed < .seconds(3), "took \(start.elapsed)")

        let cancelled = Task { try await client.send(RESPCommand("GET", "k"), timeout: .seconds(60)) }
        let cancelledAt = ContinuousClock.now
        cancelled.cancel()
        let result = await cancelled.result
        #expect(throws: (any Error).self) { try result.get() }
        #expect(cancelledAt.elapsed < .seconds(3), "took \(cancelledAt.elapsed)")
        await client.close()
    }

    @Test func garbageFromTheServerIsAProtocolErrorAndTheConnectionIsReplaced() async throws {
        // Connection 1 answers the handshake, then sends garbage; later connections behave.
        let fake = try await FakeServer { connection, chunk in
            if connection == 1 && chunk >= 2 { return "?this is not RESP\r\n" }
            return chunk == 1 ? "+OK\r\n" : "+PONG\r\n"
        }
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: fake.port)
        configuration.poolSize = 1
        let client = try HiredisClient.started(configuration: configuration)
        let error = await expectRedisError { _ = try await client.send(RESPCommand("PING")) }
        guard error?.code == .protocolError else {
            Issue.record("expected protocolError, got \(String(describing: error))")
            return
        }
        // The pool dropped the broken connection and makes a new one.
        #expect(try await client.send(RESPCommand("PING")) == .simpleString("PONG"))

        // An unsolicited reply with nothing waiting is a protocol error too, and must not crash.
        let chatty = try await FakeServer { _, chunk in chunk == 1 ? "+OK\r\n" : "+PONG\r\n+EXTRA\r\n:1\r\n" }
        var chattyConfiguration = HiredisConfiguration(host: "127.0.0.1", port: chatty.port)
        chattyConfiguration.poolSize = 1
        let chattyClient = try HiredisClient.started(configuration: chattyConfiguration)
        #expect(try await chattyClient.send(RESPCommand("PING")) == .simpleString("PONG"))
        await chattyClient.close()
        await client.close()
        await fake.close()
        await chatty.close()
    }

    @Test func cancelledCommandDoesNotShiftLaterReplies() async throws {
        try await withRedis(configure: { $0.poolSize = 1 }) { server, client in
            _ = try await client.send(RESPCommand("PING"))  // connected before the server freezes
            server.pause()
            let task = Task { try await client.send(RESPCommand("ECHO", "cancelled")) }
            try await Task.sleep(for: .milliseconds(50))
            task.cancel()
            let result = await task.result
            #expect(throws: CancellationError.self) { try result.get() }
            server.resume()
            #expect(try await client.send(RESPCommand("ECHO", "next")).string == "next")
        }
    }
}
