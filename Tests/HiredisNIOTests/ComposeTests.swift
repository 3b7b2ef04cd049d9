import EmbeddedRedis
import Foundation
import NIOConcurrencyHelpers
import Testing

@Suite("docker-compose.yml")
struct ComposeTests {
    static let composePath = RedisServer.findExecutable("docker-compose")
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: composePath), "docker-compose is not installed"))
    func composeFileValidates() async throws {
        let lines = NIOLockedValueBox<[String]>([])
        let process = try ChildProcess(
            executable: Self.composePath,
            arguments: ["-f", Self.repositoryRoot.appendingPathComponent("docker-compose.yml").path, "config"]
        ) { line in lines.withLockedValue { $0.append(line) } }
        let finished = await process.waitForExit(timeout: .seconds(60))
        let output = lines.withLockedValue { $0.joined(separator: "\n") }
        #expect(finished)
        #expect(process.exitCode == 0, "docker-compose config failed:\n\(output)")
        // The settings that matter for session data survived parsing.
        #expect(output.contains("noeviction"))
        #expect(output.contains("notify-keyspace-events"))
        #expect(output.contains("appendonly"))
        #expect(output.contains("healthcheck"))
        // Both bases: bookworm (hiredis 0.14, the Dockerfile's default) and noble (hiredis 1.x).
        #expect(output.contains("DISTRO: noble") && output.contains("HIREDIS: libhiredis1.1.0"))
    }
}
