@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import LoadVerdict
import NIOConcurrencyHelpers
import SessionCache

/// Starts the worker processes, injects the planned faults, shows progress, waits until every
/// session has been finalized, then checks and reports.
struct Coordinator {
    var parameters: LoadParameters
    var reportDirectory: URL
    /// The data Redis the faults act on, when the run started it.
    var target: FaultTarget?

    /// A moment of the run worth marking on the report's timelines.
    struct Mark: Codable, Sendable {
        var second: Double
        var event: String
    }

    /// The data Redis once a second (summed over the primaries of a cluster); nil fields when it
    /// did not answer (paused, restarting).
    struct RedisSample: Codable, Sendable {
        var second: Double
        /// Share of one core used by Redis since the previous sample (user + system).
        var cpu: Double?
        var usedMemoryBytes: Double?
        var connectedClients: Double?
        var opsPerSecond: Double?
    }

    /// What a run came to, for `--find-capacity`.
    struct Outcome {
        var passed: Bool
        var opsPerSecond: Double
        var p99Milliseconds: Double
        var errors: Int
    }

    /// Runs the load, checks and reports.
    func run() async throws -> Outcome {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let parametersFile = try parameters.writeForWorkers()
        defer { try? FileManager.default.removeItem(at: parametersFile.deletingLastPathComponent()) }
        try FileManager.default.createDirectory(at: reportDirectory, withIntermediateDirectories: true)
        var workers: [(ChildProcess, URL)] = []
        let output = NIOLockedValueBox<[String]>([])
        let start = ContinuousClock.now
        for index in 0..<parameters.instances {
            let resultFile = reportDirectory.appendingPathComponent("worker-\(index).json")
            try? FileManager.default.removeItem(at: resultFile)
            let process = try ChildProcess(
                executable: executable,
                arguments: ["--worker-index", "\(index)", "--worker-parameters", parametersFile.path, "--worker-result", resultFile.path]
            ) { line in output.withLockedValue { $0.append("worker \(index): \(line)") } }
            workers.append((process, resultFile))
        }

        let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: parameters.redisURL))
        let booksClient = try HiredisClient.started(configuration: try HiredisConfiguration(url: parameters.bookkeepingURL))
        let books = Bookkeeping(client: booksClient, parameters: parameters)
        defer {
            Task {
                await client.close()
                await books.close()
            }
        }
        let marks = NIOLockedValueBox<[Mark]>([])
        let killedWorkers = NIOLockedValueBox<Set<Int>>([])
        // A constant for the task to capture (`workers` is a var: a sanitizer build's region
        // checking refused sending it).
        let processes = workers.map(\.0)
        let faults = Task {
            await inject(parameters.faults, start: start, client: client, workers: processes, marks: marks, killed: killedWorkers)
        }
        let drain = Task { try await drainUntilDone(client: client, books: books, start: start, marks: marks) }
        let samples = NIOLockedValueBox<[RedisSample]>([])
        let sampling = Task { await sample(client, start: start, into: samples) }
        await showProgress(books: books, workers: workers.map(\.0), start: start)
        sampling.cancel()
        faults.cancel()
        let unfinished = (try? await drain.value) ?? -1

        var results: [WorkerResult] = []
        var failures: [String] = []
        let killed = killedWorkers.withLockedValue { $0 }
        for (index, (process, file)) in workers.enumerated() where !killed.contains(index) {
            if process.exitCode != 0 { failures.append("worker \(index) exited with status \(process.waitStatus ?? -1)") }
            if let data = try? Data(contentsOf: file), let result = try? JSONDecoder().decode(WorkerResult.self, from: data) {
                results.append(result)
            } else {
                failures.append("worker \(index) left no result")
            }
        }
        for line in output.withLockedValue({ $0 }) where line.contains("Fatal") || line.contains("fatal error") { print(line) }

        var storeConfiguration = SessionStoreConfiguration(namespace: parameters.namespace)
        storeConfiguration.expiryListener = true
        let store = try SessionStore(client: client, configuration: storeConfiguration)
        // What a failover may lose when writes do not wait for a replica: the increments
        // acknowledged in the second before the primary died and in the second it died.
        var allowance = 0
        if parameters.replicaWait == 0 {
            let increments = results.perSecond(\.incrementsPerSecond)
            for failover in parameters.faults.faults where failover.kind == .failover {
                let second = Int(failover.at)
                for index in [second - 1, second] where increments.indices.contains(index) { allowance += increments[index] }
            }
        }
        let verdict = try await Checks.run(
            client: client, books: books, store: store, parameters: parameters, killedWorkers: killed,
            unfinishedAfterDrain: max(0, unfinished), asyncReplicationAllowance: allowance)
        let report = Report(
            parameters: parameters, results: results, verdict: verdict, workerFailures: failures, marks: marks.withLockedValue { $0 },
            samples: samples.withLockedValue { $0 })
        report.printTable()
        try report.write(to: reportDirectory)
        print("report: \(reportDirectory.appendingPathComponent("report.html").path) (and report.json)")
        report.printSummaryLine()
        return Outcome(
            passed: report.passed, opsPerSecond: report.opsPerSecond, p99Milliseconds: report.p99Milliseconds, errors: report.errorCount)
    }

    // MARK: Faults

    /// Carries out the plan at its times; every step is marked on the timeline.
    private func inject(
        _ plan: FaultPlan, start: ContinuousClock.Instant, client: HiredisClient, workers: [ChildProcess],
        marks: NIOLockedValueBox<[Mark]>, killed: NIOLockedValueBox<Set<Int>>
    ) async {
        func mark(_ event: String) {
            let elapsed = ContinuousClock.now - start
            let second = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            marks.withLockedValue { $0.append(Mark(second: second, event: event)) }
            print(String(format: "[fault %.1fs] %@", second, event))
        }
        for fault in plan.faults {
            do {
                try await Task.sleep(until: start + .milliseconds(Int(fault.at * 1000)))
            } catch {
                return
            }
            switch fault.kind {
            case .pause:
                guard let target, let paused = try? await target.pause() else { continue }
                mark("Redis paused (SIGSTOP) for \(fault.duration) s")
                try? await Task.sleep(for: .milliseconds(Int(fault.duration * 1000)))
                target.resume(paused)
                mark("Redis resumed (SIGCONT)")
            case .kill:
                guard let target else { continue }
                mark("Redis killed (SIGKILL)")
                do {
                    try await target.killAndRestart()
                    mark("Redis restarted from its append-only file")
                } catch {
                    mark("Redis did not restart: \(error)")
                }
            case .workerKill:
                // The last worker: its claims, locks and in-flight writes are left behind.
                let index = workers.count - 1
                killed.withLockedValue { _ = $0.insert(index) }
                workers[index].send(SIGKILL)
                mark("worker \(index) killed (SIGKILL)")
            case .blackhole:
                guard let target else { continue }
                target.blackhole(true)
                mark("network to Redis blackholed for \(fault.duration) s")
                try? await Task.sleep(for: .milliseconds(Int(fault.duration * 1000)))
                target.blackhole(false)
                mark("network to Redis restored")
            case .reshard:
                guard let target else { continue }
                mark("reshard: a primary joins, slots of the run move to it")
                do {
                    let keys = try await client.scanKeys(matching: "\(parameters.namespace):*")
                    let (moved, node) = try await target.reshard(slots: Set(keys.map { HashSlot.of($0) }))
                    mark("reshard: \(moved) slots moved to \(node)")
                } catch {
                    mark("reshard failed: \(error)")
                }
            case .partition:
                guard let target else { continue }
                do {
                    let node = try await target.partition()
                    mark("primary \(node) cut off from everyone for \(fault.duration) s")
                    try? await Task.sleep(for: .milliseconds(Int(fault.duration * 1000)))
                    try target.heal()
                    mark("network to \(node) back")
                    mark("cluster stable again: \(try await target.stable())")
                } catch {
                    mark("partition failed: \(error)")
                }
            case .failover:
                guard let target else { continue }
                mark("primary killed (SIGKILL): failover")
                do {
                    let promoted = try await target.failover()
                    mark("replica \(promoted) promoted; the old primary is back as a replica")
                } catch {
                    mark("failover failed: \(error)")
                }
            }
        }
    }

    // MARK: Drain

    /// After the load, waits until no session of the run is left unfinished (no session data, no
    /// expiry hints, no claims), then tells the workers to stop. Returns how many were left when
    /// the drain limit ran out (0: done).
    private func drainUntilDone(
        client: HiredisClient, books: Bookkeeping, start: ContinuousClock.Instant, marks: NIOLockedValueBox<[Mark]>
    ) async throws -> Int {
        try await Task.sleep(until: start + .milliseconds(Int(parameters.duration * 1000)))
        let limit = ContinuousClock.now + .milliseconds(Int(parameters.drainLimit * 1000))
        var left = -1
        var zeroes = 0
        while ContinuousClock.now < limit {
            left = (try? await unfinished(client)) ?? -1
            zeroes = left == 0 ? zeroes + 1 : 0
            // Twice in a row: a finalize between two scans cannot fool it.
            if zeroes >= 2 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let elapsed = ContinuousClock.now - start
        marks.withLockedValue {
            $0.append(
                Mark(
                    second: Double(elapsed.components.seconds),
                    event: left == 0 ? "drained: every session finalized" : "drain limit reached with \(left) unfinished"))
        }
        try? await books.requestStop()
        return left == 0 ? 0 : max(left, 1)
    }

    /// Sessions of the run that are not finished: session hashes, expiry hints and claims.
    private func unfinished(_ client: HiredisClient) async throws -> Int {
        var count = 0
        var indexes: [String] = []
        for key in try await client.scanKeys(matching: "\(parameters.namespace):*") {
            if key.hasSuffix(":deadlines") || key.hasSuffix(":claims") {
                indexes.append(key)
            } else if let range = key.range(of: ":session:"), !key[range.upperBound...].contains(":") {
                count += 1
            }
        }
        if !indexes.isEmpty {
            count += try await client.pipeline(indexes.map { RESPCommand("ZCARD", .string($0)) }).reduce(0) { $0 + ($1.int ?? 0) }
        }
        return count
    }

    // MARK: Redis over time

    /// Samples INFO from the data Redis every second until cancelled.
    private func sample(_ client: HiredisClient, start: ContinuousClock.Instant, into samples: NIOLockedValueBox<[RedisSample]>) async {
        var previousCPU: (seconds: Double, at: ContinuousClock.Instant)?
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let elapsed = (now - start)
            var sample = RedisSample(second: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            if let replies = try? await client.sendToEveryPrimary(RESPCommand("INFO")) {
                var fields: [String: Double] = [:]
                for reply in replies {
                    fields.merge(RedisInfo(reply.string ?? "").numbers, uniquingKeysWith: +)
                }
                let cpu = (fields["used_cpu_user"] ?? 0) + (fields["used_cpu_sys"] ?? 0)
                if let previousCPU, cpu >= previousCPU.seconds {
                    let wall = now - previousCPU.at
                    sample.cpu =
                        (cpu - previousCPU.seconds)
                        / max(0.001, Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18)
                }
                previousCPU = (cpu, now)
                sample.usedMemoryBytes = fields["used_memory"]
                sample.connectedClients = fields["connected_clients"]
                sample.opsPerSecond = fields["instantaneous_ops_per_sec"]
            } else {
                previousCPU = nil  // a restart resets the counters
            }
            samples.withLockedValue { $0.append(sample) }
            try? await Task.sleep(until: now + .seconds(1))
        }
    }

    // MARK: Progress

    /// A live progress bar on a terminal; a plain line every five seconds otherwise (CI logs).
    private func showProgress(books: Bookkeeping, workers: [ChildProcess], start: ContinuousClock.Instant) async {
        let interactive = isatty(STDOUT_FILENO) == 1
        let total = parameters.duration + parameters.drainLimit
        var lastLine = ContinuousClock.now - .seconds(10)
        var lastOps = 0
        var lastTime = start
        while workers.contains(where: \.isRunning) {
            try? await Task.sleep(for: .seconds(1))
            if ContinuousClock.now - start > .seconds(Int64(total + 120)) {
                print("\nworkers did not finish in time: stopping them")
                for worker in workers { worker.send(SIGKILL) }
                break
            }
            let progress = (try? await books.progress()) ?? Bookkeeping.Progress()
            let (operations, errors, active) = (progress.operations, progress.errors, progress.activeSessions)
            let now = ContinuousClock.now
            let elapsed = (now - start).components.seconds
            let interval = now - lastTime
            let rate =
                Double(operations - lastOps)
                / max(0.001, Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
            lastOps = operations
            lastTime = now
            let phase = Double(elapsed) <= parameters.duration ? "load" : "drain"
            if interactive {
                let width = 30
                let filled = min(width, Int(Double(width) * Double(elapsed) / total))
                let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
                print(
                    "\r\(bar) \(elapsed)s \(phase)  \(Int(rate)) ops/s  errors \(errors)  active sessions \(active)   ",
                    terminator: "")
                fflush(nil)
            } else if now - lastLine >= .seconds(5) {
                print("[\(elapsed)s \(phase)] \(Int(rate)) ops/s, \(operations) ops, errors \(errors), active sessions \(active)")
                lastLine = now
            }
        }
        if interactive { print("") }
    }
}

/// The Redis the faults act on: an embedded server (behind a fault proxy for blackholes), an
/// embedded cluster, or an embedded primary with Sentinels. Pause and kill act on the current
/// primary (of slot 0, on a cluster).
enum FaultTarget: Sendable {
    case server(RedisServer, proxy: FaultProxy?)
    case cluster(RedisCluster)
    case sentinel(RedisSentinelGroup)

    private func primary() async throws -> RedisServer {
        switch self {
        case .server(let server, _): return server
        case .cluster(let cluster): return try await cluster.primary(forSlot: 0)
        case .sentinel(let group): return try await group.primary()
        }
    }

    /// SIGSTOP the primary; returns it for ``resume(_:)``.
    func pause() async throws -> RedisServer {
        let server = try await primary()
        server.pause()
        return server
    }

    func resume(_ server: RedisServer) { server.resume() }

    /// SIGKILL the primary and restart it at once from its append-only file (too soon for a
    /// failover: the same node serves again).
    func killAndRestart() async throws {
        let server = try await primary()
        await server.kill()
        if case .cluster(let cluster) = self { try await cluster.restart(server) } else { try await server.restart() }
    }

    /// SIGKILL the primary, wait until its replica is promoted, restart the old one (it comes
    /// back as a replica). Returns the new primary's address.
    func failover() async throws -> String {
        switch self {
        case .server:
            throw RedisServer.StartError(description: "failover needs --cluster or --sentinel")
        case .cluster(let cluster):
            let old = try await cluster.primary(forSlot: 0)
            let promoted = try await cluster.killPrimary(old)
            try await cluster.restart(old)
            try await cluster.waitUntilStable()
            return cluster.announcedAddress(of: promoted).description
        case .sentinel(let group):
            let old = try await group.primary()
            let promoted = try await group.killPrimary()
            try await old.restart()
            return promoted.address.description
        }
    }

    /// Adds a primary to the cluster and moves to it, one at a time, up to 12 of `slots` (those
    /// that hold the run's keys). Returns how many moved and the new node.
    func reshard(slots: Set<Int>) async throws -> (Int, String) {
        guard case .cluster(let cluster) = self else {
            throw RedisServer.StartError(description: "reshard needs --cluster")
        }
        let joined = try await cluster.addPrimary()
        var moved = 0
        for slot in slots.shuffled().prefix(12) {
            try await cluster.moveSlot(slot, to: joined)
            moved += 1
        }
        return (moved, cluster.announcedAddress(of: joined).description)
    }

    /// Cuts the primary of slot 0 off from everyone (``RedisCluster/partition(_:)``); returns
    /// its address.
    func partition() async throws -> String {
        guard case .cluster(let cluster) = self else {
            throw RedisServer.StartError(description: "partition needs --cluster")
        }
        let node = try await cluster.primary(forSlot: 0)
        try cluster.partition(node)
        return cluster.announcedAddress(of: node).description
    }

    /// Ends every partition.
    func heal() throws {
        guard case .cluster(let cluster) = self else {
            throw RedisServer.StartError(description: "partition needs --cluster")
        }
        for node in cluster.nodes { try cluster.heal(node) }
    }

    /// Waits until the cluster is stable; says who serves slot 0 (by the port clients use).
    func stable() async throws -> String {
        guard case .cluster(let cluster) = self else {
            throw RedisServer.StartError(description: "needs --cluster")
        }
        try await cluster.waitUntilStable()
        return "slot 0 is served by \(cluster.announcedAddress(of: try await cluster.primary(forSlot: 0)))"
    }

    var proxy: FaultProxy? {
        if case .server(_, let proxy) = self { return proxy }
        return nil
    }

    func blackhole(_ on: Bool) {
        proxy?.mode = on ? .blackhole : .pass
    }
}
