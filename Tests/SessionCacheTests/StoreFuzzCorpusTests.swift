@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
@_spi(Fuzzing) import SessionCache
import Testing

/// The store fuzz target's seeds and finds (`Fuzz/Corpus/Store`), replayed against a redis-server
/// of their own through the target's entry point: what `scripts/fuzz` found stays found.
@Suite("Fuzz corpus replay: store operations")
struct StoreFuzzCorpusTests {
    @Test func storeOperationSeedsAndRegressions() async throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/Corpus/Store").standardizedFileURL
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(names.count >= 7)
        try await RedisServer.with { server in
            let client = try HiredisClient.started(configuration: server.configuration)
            var configuration = SessionStoreConfiguration(namespace: "fuzz")
            configuration.limits.maxSessionsPerUser = 3
            let store = try SessionStore(client: client, configuration: configuration)
            for name in names {
                let bytes = [UInt8](try Data(contentsOf: directory.appendingPathComponent(name)))
                await SessionFuzzEntryPoints.runStoreOperations(bytes, store: store, client: client)
            }
            await client.close()
        }
    }
}
