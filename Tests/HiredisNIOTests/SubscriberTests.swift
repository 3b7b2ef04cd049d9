@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOCore
import TestSupport
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

@Suite("Pub/sub on a cluster")
struct ClusterSubscriberTests {
    /// A cluster (3 primaries, no replicas unless `options` say so), a client, and a subscriber
    /// whose own topology refresh is too slow to matter (only the nodes' notices can move a
    /// subscription in time) with its events; both are closed after `body`.
    private func withSubscriber(
        _ options: RedisCluster.Options = RedisCluster.Options(primaries: 3, replicasPerPrimary: 0),
        _ body: (RedisCluster, HiredisClient, HiredisSubscriber, SubscriberEvents) async throws -> Void
    ) async throws {
        ToolLogging.bootstrap()
        try await RedisCluster.with(options) { cluster in
            var configuration = cluster.configuration
            configuration.topologyRefreshInterval = .seconds(300)
            configuration.clientName = "watcher"
            let client = try HiredisClient.started(configuration: cluster.configuration)
            let subscriber = HiredisSubscriber.started(configuration: configuration)
            do {
                try await body(cluster, client, subscriber, SubscriberEvents(subscriber))
            } catch {
                await subscriber.close()
                await client.close()
                throw error
            }
            await subscriber.close()
            await client.close()
        }
    }

    /// When a slot migrates, its node sends an unasked `sunsubscribe` to the channel's
    /// subscribers. (It was taken for a confirmation: the channel was believed held where its
    /// messages no longer came, for up to a refresh interval, with no notice; a reconnect to the
    /// old node then sent `SSUBSCRIBE` again, met `MOVED`, timed out and dropped the connection.)
    @Test func aShardChannelFollowsItsSlotToAnotherPrimaryWithANotice() async throws {
        try await withSubscriber { cluster, client, subscriber, events in
            let channel = "room{moving}"
            try await subscriber.subscribe(shardChannels: [channel])
            #expect(try await client.send(RESPCommand("SPUBLISH", .string(channel), "before")).int == 1)
            #expect(await events.nextMessage(within: .seconds(5))?.payload == "before")

            let slot = HashSlot.of(channel)
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            try await cluster.moveSlot(slot, to: target)

            // The notice comes once the channel is subscribed on its new node: a message sent
            // right after it arrives.
            let notice = await events.next(within: .seconds(20))
            guard case .resubscribed? = notice else {
                Issue.record("expected a resubscribed notice after the slot moved, got \(String(describing: notice))")
                return
            }
            #expect(try await client.send(RESPCommand("SPUBLISH", .string(channel), "after")).int == 1)
            #expect(await events.nextMessage(within: .seconds(5))?.payload == "after")

            // The old node's subscriber reconnects without the channel, and keeps its connection.
            func subscriberConnections() async throws -> [Substring] {
                let list = try await cluster.send(RESPCommand("CLIENT", "LIST"), to: source).string ?? ""
                return list.split(separator: "\n").filter { $0.contains("name=watcher") && !$0.contains("topology") }
                    .compactMap { $0.split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3) }
            }
            let before = try await subscriberConnections()
            try #require(before.count == 1)
            _ = try await cluster.send(RESPCommand("CLIENT", "KILL", "ID", .string(String(before[0]))), to: source)
            let reconnected = await events.next(within: .seconds(10))
            #expect(reconnected.isResubscribed, "the old node's subscriber reconnects")
            let after = try await subscriberConnections()
            #expect(after.count == 1 && after != before)
            // Longer than the command timeout (5 s), after which a refused SSUBSCRIBE dropped the
            // connection: nothing to await, the absence of a reconnect is what is checked.
            try await Task.sleep(for: .seconds(7))
            #expect(try await subscriberConnections() == after, "no reconnect loop on the old node")
            #expect(try await client.send(RESPCommand("SPUBLISH", .string(channel), "still")).int == 1)
            #expect(await events.nextMessage(within: .seconds(5))?.payload == "still")
        }
    }

    /// A shard channel subscribed after its slot moved, while the subscriber's slot map still
    /// names the old node: the node answers `MOVED` and the channel is placed on the new owner.
    /// (The subscription waited for a confirmation that never came and failed after the command
    /// timeout.)
    @Test func aShardChannelRefusedWithMOVEDIsPlacedOnItsOwner() async throws {
        try await withSubscriber { cluster, client, subscriber, events in
            try await subscriber.subscribe(shardChannels: ["room{first}"])  // the slot map is read
            let channel = "room{late}"
            let slot = HashSlot.of(channel)
            let source = try await cluster.primary(forSlot: slot)
            let target = try #require(try await cluster.primaries().first { $0 !== source })
            try await cluster.moveSlot(slot, to: target)

            let start = ContinuousClock.now
            try await subscriber.subscribe(shardChannels: [channel])
            #expect(start.elapsed < .seconds(4), "placed after one refresh, not after a timeout")
            #expect(try await client.send(RESPCommand("SPUBLISH", .string(channel), "here")).int == 1)
            #expect(await events.nextMessage(within: .seconds(5))?.payload == "here")
        }
    }

    /// A shard channel whose slot moved to a primary that joined the cluster after the subscriber
    /// placed its first subscriptions: it gets a node subscriber of its own before `subscribe`
    /// returns. (The channel was skipped, there being no subscriber for that node, and
    /// `subscribe` returned with nothing subscribed until the next refresh.)
    @Test func aShardChannelOnAPrimaryThatJoinedIsSubscribedBeforeSubscribeReturns() async throws {
        try await withSubscriber { cluster, client, subscriber, events in
            try await subscriber.subscribe(shardChannels: ["room{first}"])
            let joined = try await cluster.addPrimary()
            let channel = "room{joined}"
            try await cluster.moveSlot(HashSlot.of(channel), to: joined)

            try await subscriber.subscribe(shardChannels: [channel])
            #expect(try await client.send(RESPCommand("SPUBLISH", .string(channel), "here")).int == 1)
            #expect(await events.nextMessage(within: .seconds(5))?.payload == "here")
        }
    }

    /// After a primary fails, its replica's notifications are subscribed within seconds, and the
    /// notice comes only once they are: a write right after it is heard. (The promoted primary
    /// was subscribed at the next topology refresh, 30-60 s later, and the notice came before its
    /// subscriber had connected.)
    @Test func aPromotedPrimarysNotificationsAreSubscribedBeforeTheNotice() async throws {
        var options = RedisCluster.Options()
        options.node.notifyKeyspaceEvents = "E$"
        try await withSubscriber(options) { cluster, client, subscriber, events in
            try await subscriber.subscribe(patterns: ["__keyevent@0__:set"])
            let key = "k{failover}"
            try await client.set(key, to: "1")
            #expect(await events.nextMessage(within: .seconds(5))?.payload == key)

            let victim = try await cluster.primary(forSlot: HashSlot.of(key))
            let start = ContinuousClock.now
            try await cluster.killPrimary(victim)
            var notice: HiredisSubscriber.Event?
            repeat { notice = await events.next(within: .seconds(30)) } while notice != nil && !notice.isResubscribed
            #expect(notice.isResubscribed, "a notice once the promoted primary is subscribed")
            #expect(start.elapsed < .seconds(30))
            try await client.set(key, to: "2")
            #expect(await events.nextMessage(within: .seconds(5))?.payload == key)
        }
    }
}

extension Optional where Wrapped == HiredisSubscriber.Event {
    fileprivate var isResubscribed: Bool {
        if case .resubscribed? = self { return true }
        return false
    }
}
