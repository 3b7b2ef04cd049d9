@_spi(Testing) import EmbeddedRedis
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

@testable import HiredisNIO

@Suite("Passing refusals, overload, slow consumers, silent networks")
struct ResilienceTests {
    private func fakeConfiguration(_ fake: FakeServer) -> HiredisConfiguration {
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: fake.port)
        configuration.poolSize = 1
        return configuration
    }

    /// A restarting Redis answers LOADING while it reads its append-only file: waited out, not
    /// handed to the caller; typed once the timeout is spent, or at once without retries.
    @Test func loadingIsWaitedOutWithinTheTimeoutThenTyped() async throws {
        // The handshake (CLIENT SETNAME) first, then three LOADING replies, then the value.
        let recovering = try await FakeServer { _, chunk in
            if chunk == 1 { return "+OK\r\n" }
            return chunk <= 4 ? "-LOADING Redis is loading the dataset in memory\r\n" : "$5\r\nhello\r\n"
        }
        let client = try HiredisClient.started(configuration: fakeConfiguration(recovering))
        #expect(try await client.get("key").map { String(buffer: $0) } == "hello")
        await client.close()

        let stuck = try await FakeServer { _, chunk in chunk == 1 ? "+OK\r\n" : "-LOADING Redis is loading the dataset in memory\r\n" }
        var patient = fakeConfiguration(stuck)
        patient.commandTimeout = .milliseconds(300)
        let retrying = try HiredisClient.started(configuration: patient)
        let started = ContinuousClock.now
        let late = await expectRedisError { _ = try await retrying.get("key") }
        #expect(late?.serverCode == "LOADING" && late?.commandMayHaveRun == false)
        #expect(started.elapsed >= .milliseconds(250))
        await retrying.close()

        var impatient = fakeConfiguration(stuck)
        impatient.retryTransientErrors = false
        let direct = try HiredisClient.started(configuration: impatient)
        let immediate = await expectRedisError { _ = try await direct.get("key") }
        #expect(immediate?.code == .server && immediate?.serverCode == "LOADING")
        await direct.close()
        await recovering.close()
        await stuck.close()
    }

    /// A restarting Redis refuses writes with LOADING but answers TIME: a pipeline of both (an
    /// uncontended lock acquire) is sent again once Redis has loaded, not handed back half refused.
    @Test func aPipelineHalfRefusedByLoadingIsSentAgain() async throws {
        let loading = "-LOADING Redis is loading the dataset in memory\r\n"
        let time = "*2\r\n$10\r\n1800000000\r\n$6\r\n123456\r\n"
        let recovering = try await FakeServer { _, chunk in
            if chunk == 1 { return "+OK\r\n" }
            return chunk <= 3 ? loading + time : "+OK\r\n" + time
        }
        let client = try HiredisClient.started(configuration: fakeConfiguration(recovering))
        let replies = try await client.pipeline([RESPCommand("SET", "lock", "token", "NX"), RESPCommand("TIME")])
        #expect(replies.first == .simpleString("OK") && replies.count == 2)
        await client.close()
        await recovering.close()
    }

    /// Without retries, or once the time is spent, a half-refused pipeline's replies come back as
    /// they are: error replies as values, the others' results kept.
    @Test func aHalfRefusedPipelineKeepsItsRepliesWhenNotSentAgain() async throws {
        let time = "*2\r\n$10\r\n1800000000\r\n$6\r\n123456\r\n"
        let stuck = try await FakeServer { _, chunk in
            chunk == 1 ? "+OK\r\n" : "-LOADING Redis is loading the dataset in memory\r\n" + time
        }
        let commands = [RESPCommand("SET", "lock", "token", "NX"), RESPCommand("TIME")]
        var patient = fakeConfiguration(stuck)
        patient.commandTimeout = .milliseconds(300)
        var impatient = fakeConfiguration(stuck)
        impatient.retryTransientErrors = false
        for configuration in [patient, impatient] {
            let client = try HiredisClient.started(configuration: configuration)
            let replies = try await client.pipeline(commands)
            guard replies.count == 2, case .error(let text) = replies[0] else {
                Issue.record("expected the refusal as a value, got \(replies)")
                continue
            }
            #expect(text.hasPrefix("LOADING") && replies[1].array?.count == 2)
            await client.close()
        }
        await stuck.close()
    }

    /// A passing refusal of a command that may have run (one node's part of a split cluster
    /// pipeline, while the other parts ran) is not tried again: that would run the rest twice.
    @Test func aRefusalOfWhatMayHaveRunIsNotTriedAgain() throws {
        let client = try HiredisClient(configuration: HiredisConfiguration(host: "127.0.0.1", port: 1))
        let loading = HiredisError.server(HiredisServerError(reply: "LOADING Redis is loading the dataset in memory"))
        #expect(client.isRetryable(loading))
        #expect(!client.isRetryable(loading.mayHaveRun()))
    }

    /// Which half-refused pipelines may be sent again: only when what ran only reads.
    @Test func onlyPipelinesWhoseOtherCommandsOnlyReadAreSentAgain() {
        let loading = RESPReply.error("LOADING Redis is loading the dataset in memory")
        let set = RESPCommand("SET", "k", "v")
        let get = RESPCommand("GET", "k")
        let time = RESPCommand("TIME")
        #expect(HiredisClient.transientRefusal([loading, .array([])], of: [set, time])?.code == "LOADING")
        #expect(HiredisClient.transientRefusal([loading, .null], of: [set, get])?.code == "LOADING")
        #expect(HiredisClient.transientRefusal([loading, loading], of: [set, set])?.code == "LOADING")
        // A WAIT after a refused write counted nothing of it: the pair goes again.
        let wait = RESPCommand("WAIT", "1", "100")
        #expect(HiredisClient.transientRefusal([.error("TRYAGAIN migrating"), .integer(0)], of: [set, wait])?.code == "TRYAGAIN")
        #expect(HiredisClient.transientRefusal([.simpleString("OK"), .integer(0), loading], of: [set, wait, set]) == nil)
        // A write that ran, or a refusal that does not pass, keeps the replies as they are.
        #expect(HiredisClient.transientRefusal([.simpleString("OK"), loading], of: [set, set]) == nil)
        #expect(HiredisClient.transientRefusal([loading, .error("WRONGTYPE no")], of: [set, get]) == nil)
        #expect(HiredisClient.transientRefusal([.simpleString("OK"), .null], of: [set, get]) == nil)
        // Behind Sentinels, a demoted primary's READONLY passes too: it ran none of the writes.
        let readOnly = RESPReply.error("READONLY You can't write against a read only replica.")
        #expect(HiredisClient.transientRefusal([readOnly, .array([])], of: [set, time], readOnlyPasses: true)?.code == "READONLY")
        #expect(HiredisClient.transientRefusal([readOnly, .array([])], of: [set, time]) == nil, "not without Sentinels")
        #expect(HiredisClient.transientRefusal([.simpleString("OK"), readOnly], of: [set, set], readOnlyPasses: true) == nil)
    }

    /// A long script makes Redis answer BUSY to everyone else: a caller waits it out.
    @Test func aBusyScriptIsWaitedOut() async throws {
        try await RedisServer.with(.init(extra: [("busy-reply-threshold", "100")])) { server in
            let runner = try HiredisClient.started(configuration: server.configuration)
            var impatientConfiguration = server.configuration
            impatientConfiguration.retryTransientErrors = false
            let impatient = try HiredisClient.started(configuration: impatientConfiguration)
            let waiting = try HiredisClient.started(configuration: server.configuration)
            try await waiting.set("key", to: "value")
            let script = LuaScript(
                """
                local t0 = redis.call('TIME')
                repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 800000
                return 1
                """)
            let busy = Task { try await runner.run(script, keys: [], arguments: []) }
            // The script is running once others are refused with BUSY.
            var refused: HiredisError?
            while refused == nil {
                do {
                    _ = try await impatient.send(RESPCommand("PING"))
                } catch let error as HiredisError where error.serverCode == "BUSY" {
                    refused = error
                }
            }
            #expect(refused?.commandMayHaveRun == false)
            #expect(try await waiting.get("key").map { String(buffer: $0) } == "value")
            #expect(try await busy.value == .integer(1))
            for client in [runner, impatient, waiting] { await client.close() }
        }
    }

    /// Commands piling up behind a frozen server are bounded: beyond the bound, a typed error at
    /// once (nothing was sent), not an unbounded queue.
    @Test func pendingCommandsAreBoundedWithATypedOverloadedError() async throws {
        try await withRedis(
            configure: {
                $0.poolSize = 1
                $0.maximumPendingCommands = 10
                $0.commandTimeout = .seconds(1)
            }
        ) { server, client in
            _ = try await client.send(RESPCommand("PING"))
            server.pause()
            let errors = await withTaskGroup(of: HiredisError?.self) { group in
                for index in 0..<40 {
                    group.addTask {
                        do {
                            _ = try await client.send(RESPCommand("ECHO", .string("\(index)")))
                            return nil
                        } catch {
                            return error as? HiredisError
                        }
                    }
                }
                var errors: [HiredisError] = []
                for await error in group { if let error { errors.append(error) } }
                return errors
            }
            server.resume()
            let overloaded = errors.filter { $0.code == .overloaded }
            #expect(overloaded.count >= 25, "\(errors.map(\.code))")
            #expect(overloaded.allSatisfy { !$0.commandMayHaveRun })
            // Back to normal once the server is.
            #expect(try await client.send(RESPCommand("ECHO", "after")).string == "after")
        }
    }

    /// A consumer that does not keep up loses the oldest messages and is told how many.
    @Test func aSlowConsumerGetsAGapInsteadOfUnboundedMemory() async throws {
        try await withRedis { server, client in
            let subscriber = HiredisSubscriber.started(configuration: server.configuration, bufferSize: 4)
            try await subscriber.subscribe(channels: ["news"])
            for index in 0..<50 { _ = try await client.publish(.string("\(index)"), to: "news") }
            // Every message is delivered or dropped: wait until the last one arrives.
            var dropped = 0
            var last = ""
            for await event in subscriber.events {
                switch event {
                case .gap(let count): dropped = count
                case .message(_, _, let payload): last = String(buffer: payload)
                case .resubscribed: break
                }
                if last == "49" { break }
            }
            #expect(dropped >= 40, "only \(dropped) dropped")
            await subscriber.close()
        }
    }

    /// A network that silently drops everything (no reset): the command fails within its timeout,
    /// the connection is presumed dead and replaced, and nothing waits for the kernel.
    @Test func aBlackholedConnectionIsDetectedAndReplaced() async throws {
        try await RedisServer.with { server in
            let proxy = try await FaultProxy.start(forwardingTo: server.port)
            var configuration = server.configuration
            configuration.port = proxy.port
            configuration.poolSize = 1
            configuration.commandTimeout = .milliseconds(500)
            let client = try HiredisClient.started(configuration: configuration)
            #expect(try await client.send(RESPCommand("PING")) == .simpleString("PONG"))
            proxy.mode = .blackhole
            let started = ContinuousClock.now
            let error = await expectRedisError { _ = try await client.send(RESPCommand("ECHO", "lost")) }
            #expect(error?.code == .timedOut || error?.code == .connectionLost)
            #expect(error?.commandMayHaveRun == true)
            #expect(started.elapsed < .seconds(2))
            proxy.mode = .pass
            // A new connection (the old one was closed as dead).
            #expect(try await client.send(RESPCommand("ECHO", "back")).string == "back")
            await client.close()
            await proxy.stop()
        }
    }
}
