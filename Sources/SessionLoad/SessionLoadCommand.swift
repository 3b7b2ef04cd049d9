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
            Redis holds every byte, without a reset), failover@10s (with --cluster or --sentinel: SIGKILL the \
            primary, its replica is promoted; with --replica-wait 1 nothing acknowledged may be lost), \
            reshard@14s (with --cluster: a primary joins and up to 12 slots holding the run's keys move to \
            it, one by one under the load), partition:4s@16s (with --cluster: the primary of slot 0 is cut off \
            from the workers, its replica and the other nodes; past the node timeout its replica is \
            promoted, and the old primary follows it when the network is back). The checker counts an operation whose reply was lost \
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
    @Flag(help: "Run on an embedded primary with 2 replicas and 3 Sentinels.") var sentinel = false
    @Option(help: "Replicas every write waits for (the store's replicaAcknowledgement); 0: none.") var replicaWait = 0
    @Option(help: "The expiry listeners' claim lease, in seconds.") var claimLease: Double = 5
    @Option(help: "Open loop: operations per second started on schedule over all instances (0: closed loop).") var rate: Double = 0
    @Flag(help: "Open-loop runs of --duration at rising rates (from --rate, default 200): the highest whose p99 stays under --p99-bound.")
    var findCapacity = false
    @Option(help: "The p99 bound for --find-capacity, in milliseconds.") var p99Bound: Double = 50
    @Option(help: "Each instance's touch-cache capacity in entries (default: the store's, 100,000; 0: off).")
    var touchCacheCapacity: Int?

    @Flag(help: .hidden) var unsafeNoLock = false
    @Option(help: .hidden) var workerIndex: Int?
    @Option(help: .hidden) var workerParameters: String?
    @Option(help: .hidden) var workerResult: String?

    func run() async throws {
        ToolLogging.bootstrap()
        if let workerIndex, let workerParameters, let workerResult {
            // A file only this user can read (the coordinator's, see writeForWorkers): never the
            // parameters themselves on the command line, which would show the Redis password.
            let data = try Data(contentsOf: URL(fileURLWithPath: workerParameters))
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
        if findCapacity, !plan.faults.isEmpty { throw ValidationError("--find-capacity runs without --faults") }
        if rate < 0 { throw ValidationError("--rate must be positive (0: closed loop)") }
        if let touchCacheCapacity, touchCacheCapacity < 0 { throw ValidationError("--touch-cache-capacity must be 0 or more") }
        if url != nil, plan.faults.contains(where: { $0.kind != .workerKill }) {
            throw ValidationError("--faults: only worker-kill acts on a Redis the run did not start")
        }

        var node = RedisServer.Options(notifyKeyspaceEvents: "Kx", appendOnly: true)
        node.appendFsync = appendfsync
        var stops: [@Sendable () async -> Void] = []
        var target: FaultTarget?
        let dataURL: String
        if let url {
            dataURL = url
        } else if cluster {
            var options = RedisCluster.Options()
            options.node = node
            options.partitionable = plan.faults.contains { $0.kind == .partition }
            let embedded = try await RedisCluster.start(options)
            stops.append { await embedded.stop() }
            print("embedded Redis Cluster: \(embedded.url)")
            target = .cluster(embedded)
            dataURL = embedded.url
        } else if sentinel {
            var options = RedisSentinelGroup.Options()
            options.node = node
            let embedded = try await RedisSentinelGroup.start(options)
            stops.append { await embedded.stop() }
            print("embedded primary with Sentinels: \(embedded.url)")
            target = .sentinel(embedded)
            dataURL = embedded.url
        } else {
            let embedded = try await RedisServer.start(node)
            stops.append { await embedded.stop() }
            print("embedded redis-server on 127.0.0.1:\(embedded.port) (appendfsync \(appendfsync))")
            if plan.faults.contains(where: { $0.kind == .blackhole }) {
                let proxy = try await FaultProxy.start(forwardingTo: embedded.port)
                stops.append { await proxy.stop() }
                target = .server(embedded, proxy: proxy)
                dataURL = "redis://127.0.0.1:\(proxy.port)"
            } else {
                target = .server(embedded, proxy: nil)
                dataURL = embedded.url
            }
        }
        if plan.faults.contains(where: { $0.kind == .failover }), !cluster, !sentinel {
            throw ValidationError("--faults: failover needs --cluster or --sentinel")
        }
        for kind in [FaultPlan.Kind.reshard, .partition] where plan.faults.contains(where: { $0.kind == kind }) && !cluster {
            throw ValidationError("--faults: \(kind.rawValue) needs --cluster")
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
        parameters.replicaWait = replicaWait
        parameters.rate = rate
        parameters.touchCacheCapacity = touchCacheCapacity
        if !plan.faults.isEmpty { print("faults: \(plan.description)") }
        let passed: Bool
        do {
            if findCapacity {
                passed = try await searchCapacity(parameters, target: target)
            } else {
                let coordinator = Coordinator(parameters: parameters, reportDirectory: URL(fileURLWithPath: report), target: target)
                passed = try await coordinator.run().passed
            }
        } catch {
            for stop in stops.reversed() { await stop() }
            throw error
        }
        for stop in stops.reversed() { await stop() }
        if !passed { throw ExitCode(1) }
    }

    /// Open-loop runs at rising rates (×1.5 each) until p99 exceeds the bound, the checks fail, or
    /// the achieved rate falls short of the offered one; prints the highest rate that held.
    private func searchCapacity(_ base: LoadParameters, target: FaultTarget?) async throws -> Bool {
        var offered = base.rate > 0 ? base.rate : 200
        var best: (rate: Double, p99: Double)?
        var allPassed = true
        for step in 0..<12 {
            var parameters = base
            parameters.rate = offered
            parameters.runID = base.runID + "-\(step)"
            let directory = URL(fileURLWithPath: report).appendingPathComponent(String(format: "rate-%.0f", offered))
            let outcome = try await Coordinator(parameters: parameters, reportDirectory: directory, target: target).run()
            allPassed = allPassed && outcome.passed
            let held = outcome.passed && outcome.p99Milliseconds <= p99Bound && outcome.opsPerSecond >= offered * 0.9
            print(
                String(
                    format: "capacity step %d: offered %.0f ops/s, achieved %.0f, p99 %.1f ms, %@", step, offered, outcome.opsPerSecond,
                    outcome.p99Milliseconds, held ? "held" : "did not hold"))
            guard held else { break }
            best = (offered, outcome.p99Milliseconds)
            offered *= 1.5
        }
        print(
            "{\"bench\":\"capacity\",\"instances\":\(base.instances),\"p99_bound_ms\":\(p99Bound),\"capacity_ops_per_s\":\(Int(best?.rate ?? 0)),\"p99_ms_at_capacity\":\(String(format: "%.2f", best?.p99 ?? 0))}"
        )
        return allPassed
    }
}
