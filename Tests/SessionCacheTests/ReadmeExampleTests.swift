@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import SessionCache
import Testing

/// The README's examples, nearly verbatim, against a real server: they compile and they work.
@Suite("README examples")
struct ReadmeExampleTests {
    @Test func theRedisClientExample() async throws {
        try await RedisServer.with { server in
            var configuration = try HiredisConfiguration(url: server.url + "/0")
            configuration.commandTimeout = .seconds(2)
            let client = try HiredisClient(configuration: configuration)

            let (value, reply, replies, results, total) = try await client.withRunning { client in
                try await client.set("greeting", to: "hello", expiresIn: .seconds(60))
                let value = try await client.get("greeting")
                let reply = try await client.send(RESPCommand("INCRBY", "counter", 5))
                let replies = try await client.pipeline([RESPCommand("INCR", "a"), RESPCommand("GET", "a")])
                let results = try await client.transaction([RESPCommand("INCR", "a"), RESPCommand("EXPIRE", "a", 60)])
                let script = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
                let total = try await client.run(script, keys: ["counter"], arguments: [2])
                try await client.withExclusiveConnection { connection in
                    _ = try await connection.send(RESPCommand("WATCH", "a"))
                    _ = try await connection.transaction([RESPCommand("SET", "a", "1")])
                }
                return (value, reply, replies, results, total)
            }
            #expect(value.map { String(buffer: $0) } == "hello")
            #expect(reply == .integer(5) && replies.count == 2 && results.count == 2 && total == .integer(7))
            // After withRunning the client is stopped.
            do {
                _ = try await client.get("greeting")
                Issue.record("a stopped client answered")
            } catch let error as HiredisError {
                #expect(error.code == .clientClosed)
            }
        }
    }

    @Test func theTaskExecutorExample() async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient(configuration: server.configuration)
            try await client.withRunning { client in
                try await client.set("greeting", to: "hello")
                let (value, onLoop) = try await withTaskExecutorPreference(client.taskExecutor) {
                    let value = try await client.get("greeting")
                    // Resumed by the reply on the connection's own thread.
                    return (value, client.taskExecutor.eventLoop.inEventLoop)
                }
                #expect(value.map { String(buffer: $0) } == "hello")
                #expect(onLoop)
                // Without the preference the task runs elsewhere.
                let value2 = try await client.get("greeting")
                #expect(value2 != nil && !client.taskExecutor.eventLoop.inEventLoop)

                // Many callers spread over every loop of the client's connections.
                let keys = (0..<40).map { "k\($0)" }
                for key in keys { try await client.set(key, to: .string(key)) }
                let rightValueOnOwnLoop = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for (index, key) in keys.enumerated() {
                        let executor = client.taskExecutors[index % client.taskExecutors.count]
                        group.addTask(executorPreference: executor) {
                            let value = try await client.get(key)
                            return value.map { String(buffer: $0) } == key && executor.eventLoop.inEventLoop
                        }
                    }
                    return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
                }
                #expect(rightValueOnOwnLoop == keys.count)
            }
        }
    }

    @Test func thePubSubExample() async throws {
        try await RedisServer.with { server in
            let configuration = server.configuration
            let publisher = try HiredisClient.started(configuration: configuration)
            defer { Task { await publisher.close() } }
            let subscriber = HiredisSubscriber(configuration: configuration)
            var seen: [String] = []
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await subscriber.run() }
                try await subscriber.subscribe(channels: ["news"])
                try await subscriber.subscribe(patterns: ["room:*"])
                _ = try await publisher.publish("hello", to: "news")
                _ = try await publisher.publish("hi all", to: "room:1")
                for await event in subscriber.events {
                    switch event {
                    case .message(let channel, let pattern, let payload):
                        seen.append("\(channel) \(pattern ?? "-") \(String(buffer: payload))")
                    case .resubscribed: seen.append("resubscribed")
                    case .gap(let dropped): seen.append("gap \(dropped)")
                    }
                    if seen.count == 2 { break }
                }
                await subscriber.close()
                try await group.waitForAll()
            }
            #expect(seen == ["news - hello", "room:1 room:* hi all"])
        }
    }

    @Test func theSessionsLocksAndExpiryExamples() async throws {
        try await RedisServer.with { server in
            let client = try HiredisClient.started(configuration: HiredisConfiguration(url: server.url))
            var configuration = SessionStoreConfiguration(namespace: "chat")
            configuration.messageWindow = 20
            configuration.expiryListener = true
            let store = try SessionStore(client: client, configuration: configuration)

            let session = try await store.create(user: "alice", metadata: ["plan": "pro"], mode: .standard, agentType: "support")
            guard case .resumed(let resumed, _) = try await store.resume(session.id, user: "alice") else {
                Issue.record("not resumed")
                return
            }
            let cookieID: String? = session.id
            let recovered = try await store.recover(cookieID, user: "alice")
            try await store.touch(session.id)
            try await store.touch(session.id, activity: .heartbeat)
            try await store.appendTurn(session.id, user: "Hi", assistant: "Hello! How can I help?")
            let recent = try await store.recentMessages(session.id, limit: 10)
            try await store.setMetadata(session.id, ["cart": ["book"], "theme": "dark"])
            try await store.setTimeoutMode(session.id, .lenient)
            let summaries = try await store.list(user: "alice")

            let locks = SessionLock.started(store: store)
            try await locks.withLock(session.id) { lease in
                let count = try await store.metadata(session.id)["count"]?.numberValue ?? 0
                try await store.setMetadata(session.id, key: "count", value: .number(count + 1), lease: lease)
            }

            let hooks = HookRecorder()
            let listener = ExpiryListener(
                store: store, onWarning: { _ in },
                onExpiry: { expired in hooks.record(expired) })
            let group = ServiceGroup(services: [listener], logger: Logger(label: "readme"))
            let running = Task { try await group.run() }

            let rotated = try await store.rotate(session.id)
            let stats = try await store.stats()
            try await store.deleteAll(user: "alice")
            #expect(await hooks.wait(forSessions: 1, timeout: .seconds(10)), "the delete went through the hook")
            await group.triggerGracefulShutdown()
            _ = try await running.value

            #expect(resumed.user == "alice" && recovered.session.id == session.id)
            #expect(recent.map(\.content) == ["Hi", "Hello! How can I help?"])
            #expect(summaries.first?.id == session.id && stats.activeSessions == 1)
            #expect(hooks.calls[rotated.id]?.first?.session.metadata["count"] == 1)
            await locks.close()
            await client.close()
        }
    }
}
