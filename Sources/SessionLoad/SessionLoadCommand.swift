import ArgumentParser
import EmbeddedRedis
import Foundation

/// `session-load`: simulated users with several tabs each across several app-server instances.
@main
struct SessionLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session-load",
        abstract: "Load-test the session cache with several app-server instances and check its correctness.",
        discussion: """
            Launches --instances worker processes (each with its own connections, expiry listener and locks) \
            that coordinate only through Redis. Simulated users work in several tabs each (a user's tabs are \
            spread over the instances): create, resume after a gap, turns appended under the lock, metadata \
            updates, heartbeats, session lists, rotate, delete, log out everywhere; some users go idle so \
            that their sessions expire during the run. At the end it checks, from Redis and what the workers \
            recorded: no lost update, every ended session's hook ran exactly once, no session came back after \
            its hook, every key has a TTL. A failed check exits non-zero.

            Without --redis (or REDIS_URL) it starts its own redis-server on a free loopback port.
            """)

    @Option(help: "Seconds of load.") var duration: Double = 30
    @Option(help: "Simulated users.") var users = 200
    @Option(help: "Tabs per user.") var tabs = 3
    @Option(help: "App-server instances (worker processes).") var instances = 3
    @Option(help: "Idle timeout of the run's sessions, in seconds.") var ttl: Double = 4
    @Option(help: "Seed of the simulated users' choices.") var seed: UInt64 = 42
    @Option(help: "Pause between a tab's operations, at most this many milliseconds.") var think = 5
    @Option(help: "Directory for report.json and report.html.") var report = "session-load-report"
    @Option(help: "Redis URL (default: REDIS_URL, or an embedded redis-server).") var redis: String?

    @Flag(help: .hidden) var unsafeNoLock = false
    @Option(help: .hidden) var workerIndex: Int?
    @Option(help: .hidden) var workerParameters: String?
    @Option(help: .hidden) var workerResult: String?

    func run() async throws {
        if let workerIndex, let workerParameters, let workerResult {
            guard let data = Data(base64Encoded: workerParameters) else { throw ValidationError("bad worker parameters") }
            let parameters = try JSONDecoder().decode(LoadParameters.self, from: data)
            let result = try await Worker(parameters: parameters, index: workerIndex).run()
            try JSONEncoder().encode(result).write(to: URL(fileURLWithPath: workerResult))
            return
        }

        let url = redis ?? ProcessInfo.processInfo.environment["REDIS_URL"]
        let embedded: RedisServer? = url == nil ? try await RedisServer.start(.init(notifyKeyspaceEvents: "KEx")) : nil
        if let embedded { print("embedded redis-server on 127.0.0.1:\(embedded.port)") }
        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let parameters = LoadParameters(
            runID: runID, redisURL: url ?? embedded!.url, duration: duration, users: users, tabs: tabs, instances: instances, ttl: ttl,
            seed: seed, thinkMilliseconds: think, unsafeNoLock: unsafeNoLock)
        let coordinator = Coordinator(parameters: parameters, reportDirectory: URL(fileURLWithPath: report), embedded: embedded)
        let status: Int32
        do {
            status = try await coordinator.run()
        } catch {
            await embedded?.stop()
            throw error
        }
        await embedded?.stop()
        if status != 0 { throw ExitCode(status) }
    }
}
