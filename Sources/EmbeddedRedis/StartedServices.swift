import HiredisNIO

// For tests, benchmarks and tools, where a `ServiceGroup` would be ceremony: services whose
// `run()` goes on in a task of its own until `close()`. Fire-and-forget, so not public API
// (`@_spi(Testing) import EmbeddedRedis`): applications put the client and the subscriber in
// their `ServiceGroup`.

extension HiredisClient {
    /// A client whose ``HiredisClient/run()`` runs in a task of its own until ``HiredisClient/close()``.
    @_spi(Testing) public static func started(configuration: HiredisConfiguration) throws -> HiredisClient {
        let client = try HiredisClient(configuration: configuration)
        Task { try? await client.run() }
        return client
    }
}

extension HiredisSubscriber {
    /// A subscriber whose ``HiredisSubscriber/run()`` runs in a task of its own until
    /// ``HiredisSubscriber/close()``.
    @_spi(Testing) public static func started(configuration: HiredisConfiguration, bufferSize: Int = 10_000) -> HiredisSubscriber {
        let subscriber = HiredisSubscriber(configuration: configuration, bufferSize: bufferSize)
        Task { try? await subscriber.run() }
        return subscriber
    }
}
