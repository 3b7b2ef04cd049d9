@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOCore
import Testing

@Suite("Pub/sub")
struct SubscriberTests {
    @Test func deliversAndResubscribesAfterTheServerRestarts() async throws {
        try await withRedis { server, client in
            let subscriber = HiredisSubscriber.started(configuration: server.configuration)
            try await subscriber.subscribe(channels: ["news", "other"])
            try await subscriber.subscribe(patterns: ["room:*"])
            var events = subscriber.events.makeAsyncIterator()

            #expect(try await client.publish("hello", to: "news") == 1)
            #expect(try await client.publish("in room", to: "room:7") == 1)
            guard case .message(let channel, nil, let payload)? = await events.next() else {
                Issue.record("expected a message")
                return
            }
            #expect(channel == "news" && String(buffer: payload) == "hello")
            guard case .message("room:7", "room:*", let roomPayload)? = await events.next() else {
                Issue.record("expected a pattern message")
                return
            }
            #expect(String(buffer: roomPayload) == "in room")

            // Channels can be removed while it runs.
            try await subscriber.unsubscribe(channels: ["other"])
            #expect(try await client.publish("nobody", to: "other") == 0)

            await server.kill()
            try await server.restart()
            guard case .resubscribed? = await events.next() else {
                Issue.record("expected a gap notice after the restart")
                return
            }
            #expect(try await client.publish("after restart", to: "news") == 1)
            #expect(try await client.publish("room again", to: "room:1") == 1)
            guard case .message("news", nil, let after)? = await events.next() else {
                Issue.record("expected a message after resubscribing")
                return
            }
            #expect(String(buffer: after) == "after restart")
            guard case .message("room:1", "room:*", _)? = await events.next() else {
                Issue.record("expected the pattern subscription to be restored")
                return
            }
            await subscriber.close()
        }
    }

    @Test func subscriberConnectionKilledByClientKill() async throws {
        try await withRedis { server, client in
            let subscriber = HiredisSubscriber.started(configuration: server.configuration)
            try await subscriber.subscribe(channels: ["c"])
            var events = subscriber.events.makeAsyncIterator()
            _ = try await client.send(RESPCommand("CLIENT", "KILL", "TYPE", "pubsub"))
            guard case .resubscribed? = await events.next() else {
                Issue.record("expected a gap notice")
                return
            }
            #expect(try await client.publish("x", to: "c") == 1)
            guard case .message("c", nil, _)? = await events.next() else {
                Issue.record("expected a message")
                return
            }
            await subscriber.close()
        }
    }
}
