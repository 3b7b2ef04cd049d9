import ArgumentParser
import EmbeddedRedis
import Foundation
import LoadVerdict

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

            Without --redis (or REDIS_URL) it starts its own redis-server on a free loopback port (with \
            --cluster, a 3-primary Redis Cluster), with an append-only file. What the workers saw is kept \
            in a second redis-server that no fault touches.

            Faults (--faults, embedded Redis only except worker-kill): a comma-separated timeline of \
            kind[:duration]@time, times in seconds from the start of the load: pause:3s@5s (SIGSTOP, then \
            SIGCONT), kill@8s (SIGKILL and restart from the append-only file), worker-kill@6s (SIGKILL the \
            last worker; the others take over its hooks), blackhole:2s@12s (a proxy between the workers and \
            Redis drops every byte, without a reset). The checker counts an operation whose reply was lost \
            as indeterminate: a counter must lie between the acknowledged increments and those plus the \
            indeterminate ones.
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
    @Option(help: "Faults to inject, e.g. pause:3s@5s,kill@8s,worker-kill@6s,blackhole:2s@12s.") var faults = ""
    @Option(help: "appendfsync of the embedded Redis: always or everysec.") var appendfsync = "always"
    @Flag(help: "Run on an embedded 3-primary Redis Cluster (faults act on the primary of slot 0).") var cluster = false
    @Option(help: "The expiry listeners' claim lease, in seconds.") var claimLease: Double = 5

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

        let plan: FaultPlan
        do {
            plan = try FaultPlan(parsing: faults)
        } catch {
            throw ValidationError("--faults: \(error)")
        }
        guard ["always", "everysec"].contains(appendfsync) else { throw ValidationError("--appendfsync: always or everysec") }
        if let late = plan.faults.first(where: { $0.at + $0.duration >= duration }) {
            throw ValidationError("--faults: \(late.description) does not end before the load does (\(duration) s)")
        }
        let url = redis ?? ProcessInfo.processInfo.environment["REDIS_URL"]
        if url != nil, plan.faults.contains(where: { $0.kind != .workerKill }) {
            throw ValidationError("--faults: only worker-kill acts on a Redis the run did not start")
        }

        var node = RedisServer.Options(notifyKeyspaceEvents: "KEx", appendOnly: true)
        node.appendFsync = appendfsync
        var stops: [@Sendable () async -> Void] = []
        var target: FaultTarget?
        let dataURL: String
        if let url {
            dataURL = url
        } else if cluster {
            var options = RedisCluster.Options()
            options.node = node
            let embedded = try await RedisCluster.start(options)
            stops.append { await embedded.stop() }
            print("embedded Redis Cluster: \(embedded.url)")
            target = FaultTarget(server: try await embedded.primary(forSlot: 0), proxy: nil)
            dataURL = embedded.url
        } else {
            let embedded = try await RedisServer.start(node)
            stops.append { await embedded.stop() }
            print("embedded redis-server on 127.0.0.1:\(embedded.port) (appendfsync \(appendfsync))")
            if plan.faults.contains(where: { $0.kind == .blackhole }) {
                let proxy = try await FaultProxy.start(forwardingTo: embedded.port)
                stops.append { await proxy.stop() }
                target = FaultTarget(server: embedded, proxy: proxy)
                dataURL = "redis://127.0.0.1:\(proxy.port)"
            } else {
                target = FaultTarget(server: embedded, proxy: nil)
                dataURL = embedded.url
            }
        }
        if plan.faults.contains(where: { $0.kind == .blackhole }), target?.proxy == nil {
            throw ValidationError("--faults: blackhole needs the embedded standalone Redis (it runs through a proxy)")
        }
        let bookkeeping = try await RedisServer.start(.init(notifyKeyspaceEvents: nil))
        stops.append { await bookkeeping.stop() }

        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        var parameters = LoadParameters(
            runID: runID, redisURL: dataURL, duration: duration, users: users, tabs: tabs, instances: instances, ttl: ttl,
            seed: seed, thinkMilliseconds: think, unsafeNoLock: unsafeNoLock, bookkeepingURL: bookkeeping.url)
        parameters.faults = plan
        parameters.claimLeaseSeconds = claimLease
        if !plan.faults.isEmpty { print("faults: \(plan.description)") }
        let coordinator = Coordinator(parameters: parameters, reportDirectory: URL(fileURLWithPath: report), target: target)
        let status: Int32
        do {
            status = try await coordinator.run()
        } catch {
            for stop in stops.reversed() { await stop() }
            throw error
        }
        for stop in stops.reversed() { await stop() }
        if status != 0 { throw ExitCode(status) }
    }
}
