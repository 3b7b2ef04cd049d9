@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOCore
import Testing

/// Starts a redis-server for one test, hands it and a client to `body`, and always cleans up.
func withRedis<T: Sendable>(
    _ options: RedisServer.Options = .init(),
    configure: (inout HiredisConfiguration) -> Void = { _ in },
    _ body: (RedisServer, HiredisClient) async throws -> T
) async throws -> T {
    // The client's reconnect notices would flood the test output (and slow the event loops
    // that write them): warnings and above, to standard error.
    ToolLogging.bootstrap()
    return try await RedisServer.with(options) { server in
        var configuration = server.configuration
        configure(&configuration)
        let client = try HiredisClient.started(configuration: configuration)
        do {
            let result = try await body(server, client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}
