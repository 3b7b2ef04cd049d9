// A stand-in for RediStack (which `vapor/redis` re-exports): the public names a Vapor app that
// also uses Redis through RediStack has in scope. RediStack itself is not available here; what
// matters is that these names coexist with ours in one file.

public protocol RedisClient {
    func send(command: String, with arguments: [RESPValue]) async throws -> RESPValue
}

public enum RESPValue: Equatable, Sendable {
    case null
    case simpleString(String)
    case integer(Int)
}

public struct RedisConfiguration: Sendable {
    public var hostname: String
    public var port: Int

    public init(hostname: String = "127.0.0.1", port: Int = 6379) {
        self.hostname = hostname
        self.port = port
    }
}

public final class RedisConnection: RedisClient, Sendable {
    public let configuration: RedisConfiguration

    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
    }

    public func send(command: String, with arguments: [RESPValue]) async throws -> RESPValue {
        command == "PING" ? .simpleString("PONG") : .null
    }
}

public final class RedisConnectionPool: RedisClient, Sendable {
    public let connections: [RedisConnection]

    public init(configuration: RedisConfiguration, size: Int) {
        connections = (0..<size).map { _ in RedisConnection(configuration: configuration) }
    }

    public func send(command: String, with arguments: [RESPValue]) async throws -> RESPValue {
        try await connections[0].send(command: command, with: arguments)
    }
}
