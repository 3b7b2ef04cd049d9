import HiredisNIO

extension RedisServer {
    /// Sends one command over a connection of its own (the server's configuration, password
    /// included): for the harness's checks of one node.
    public func send(_ command: RESPCommand) async throws -> RESPReply {
        let connection = try await HiredisConnection.connect(configuration: configuration)
        defer { connection.close() }
        return try await connection.send(command)
    }
}

/// Runs `body` with a started resource and stops it afterwards, also when `body` throws.
func withStarted<Resource, T: Sendable>(
    _ resource: Resource, stop: (Resource) async -> Void, _ body: (Resource) async throws -> T
) async throws -> T {
    do {
        let result = try await body(resource)
        await stop(resource)
        return result
    } catch {
        await stop(resource)
        throw error
    }
}

/// Checks `condition` every 50 ms until it holds (errors count as "not yet"); throws after
/// `timeout`. For states a server reaches without telling anyone (a cluster agreeing, a failover,
/// another process finishing its writes).
public func pollUntil(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if (try? await condition()) == true { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw RedisServer.StartError(description: "timed out after \(timeout) waiting for \(what)")
}
