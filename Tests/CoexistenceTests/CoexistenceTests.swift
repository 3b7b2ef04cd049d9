import EmbeddedRedis
import HiredisNIO
import RediStackStandIn
import SessionCache
import Testing

// An app that uses RediStack (through vapor/redis) and this package in one file: every name below
// is unqualified, and none is ambiguous.
@Suite("Coexistence with RediStack's names")
struct CoexistenceTests {
    @Test func bothClientsInOneFileWithoutQualifying() async throws {
        // RediStack's names.
        let configuration = RedisConfiguration(hostname: "127.0.0.1", port: 6379)
        let pool = RedisConnectionPool(configuration: configuration, size: 2)
        let client: any RedisClient = pool
        let pong: RESPValue = try await client.send(command: "PING", with: [])
        #expect(pong == .simpleString("PONG"))
        let connection: RedisConnection = pool.connections[0]
        #expect(connection.configuration.port == 6379)

        // Ours, beside them.
        try await RedisServer.with { server in
            let ours = try HiredisClient(configuration: HiredisConfiguration(url: server.url))
            try await ours.withRunning { ours in
                let reply: RESPReply = try await ours.send(RESPCommand("PING"))
                #expect(reply.string == "PONG")
                let store = try SessionStore(client: ours, configuration: SessionStoreConfiguration(namespace: "coexist"))
                let session = try await store.create(user: "alice")
                #expect(try await store.get(session.id)?.user == "alice")
            }
        }
    }
}
