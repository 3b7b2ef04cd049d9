import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import NIOConcurrencyHelpers

/// What one load run measured.
public struct LoadResult: Sendable {
    public var operations: Int
    public var elapsed: Duration
    public var latency: Histogram<UInt64>  // nanoseconds
    /// This process's CPU time (user and system, every thread) during the run: the client's
    /// cost, apart from Redis's (another process).
    public var cpuSeconds: Double = 0

    public var opsPerSecond: Double { Double(operations) / elapsed.seconds }
    /// The client's CPU per operation, in microseconds: steadier than throughput on a shared
    /// machine, and what decides how much of the cores Redis keeps.
    public var cpuMicrosecondsPerOperation: Double { cpuSeconds / Double(operations) * 1e6 }
    public func latencyMicroseconds(atPercentile percentile: Double) -> Double {
        Double(latency.valueAtPercentile(percentile)) / 1000
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// How many latencies a load task keeps before it records them in its histogram.
private let latencyBatch = 256

/// Runs `operation` from `concurrency` tasks until `total` operations are done, timing each.
public func runLoad(
    concurrency: Int, total: Int, executor: (any TaskExecutor)? = nil,
    _ operation: @escaping @Sendable (_ task: Int, _ index: Int) async throws -> Void
) async throws -> LoadResult {
    try await runLoad(concurrency: concurrency, total: total, executors: executor.map { [$0] } ?? [], operation)
}

/// ``runLoad(concurrency:total:executor:_:)`` with the tasks spread round robin over `executors`
/// (none: the global executor).
public func runLoad(
    concurrency: Int, total: Int, executors: [any TaskExecutor],
    _ operation: @escaping @Sendable (_ task: Int, _ index: Int) async throws -> Void
) async throws -> LoadResult {
    let perTask = max(1, total / concurrency)
    let cpuBefore = processCPUSeconds()
    let start = ContinuousClock.now
    let merged = try await withThrowingTaskGroup(of: Histogram<UInt64>.self) { group in
        for task in 0..<concurrency {
            group.addTask(executorPreference: executors.isEmpty ? nil : executors[task % executors.count]) {
                var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
                // Latencies go into the histogram a batch at a time: its counts (~400 KiB per
                // task) are cold after 199 other callers ran, and one record per operation
                // missed the cache each time (7% of the client's samples with 200 callers).
                var pending: [UInt64] = []
                pending.reserveCapacity(latencyBatch)
                for index in 0..<perTask {
                    // Nanoseconds of the monotonic clock: a Duration's 128-bit arithmetic per
                    // operation was a visible part of the harness's own CPU.
                    let begin = monotonicNanoseconds()
                    try await operation(task, index)
                    pending.append(monotonicNanoseconds() &- begin)
                    if pending.count == latencyBatch {
                        for latency in pending { _ = histogram.record(latency) }
                        pending.removeAll(keepingCapacity: true)
                    }
                }
                for latency in pending { _ = histogram.record(latency) }
                return histogram
            }
        }
        var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for try await histogram in group { merged.add(histogram) }
        return merged
    }
    let elapsed = ContinuousClock.now - start
    return LoadResult(
        operations: perTask * concurrency, elapsed: elapsed, latency: merged, cpuSeconds: processCPUSeconds() - cpuBefore)
}

/// The monotonic clock, in nanoseconds.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// This process's CPU time (user + system, every thread), in seconds.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
}

/// `redis-benchmark` against a server, one test at a time, parsed from its CSV output.
public enum RedisBenchmark {
    /// What one run reports.
    public struct Result: Sendable {
        public var requestsPerSecond: Double
        /// The median latency, in microseconds.
        public var p50Microseconds: Double
    }

    /// Requests per second that `redis-benchmark -t test -c clients -P pipeline -n requests` reports.
    public static func requestsPerSecond(
        port: Int, test: String, clients: Int, pipeline: Int, requests: Int, extra: [String] = []
    ) async throws -> Double {
        try await run(port: port, test: test, clients: clients, pipeline: pipeline, requests: requests, extra: extra)
            .requestsPerSecond
    }

    /// Throughput and median latency of `redis-benchmark -t test -c clients -P pipeline -n requests`.
    public static func run(
        port: Int, test: String, clients: Int, pipeline: Int, requests: Int, extra: [String] = []
    ) async throws -> Result {
        let lines = NIOLockedValueBox<[String]>([])
        let arguments =
            ["-h", "127.0.0.1", "-p", "\(port)", "-c", "\(clients)", "-P", "\(pipeline)", "-n", "\(requests)", "--csv"]
            + (test.isEmpty ? [] : ["-t", test]) + extra
        let process = try ChildProcess(executable: RedisServer.findExecutable("redis-benchmark"), arguments: arguments) { line in
            lines.withLockedValue { $0.append(line) }
        }
        _ = await process.waitForExit()
        let output = lines.withLockedValue { $0 }
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
        // "SET","123456.79","0.2","0.1","0.2",...
        for line in output.reversed() {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count >= 5, fields[0] != "test", let rps = Double(fields[1]), let p50 = Double(fields[4]) {
                return Result(requestsPerSecond: rps, p50Microseconds: p50 * 1000)
            }
        }
        throw RedisServer.StartError(description: "redis-benchmark printed no result: \(output.joined(separator: "\n"))")
    }
}

/// A number rounded for reports.
public func rounded(_ value: Double, _ places: Int = 2) -> Double {
    let scale = pow(10, Double(places))
    return (value * scale).rounded() / scale
}

/// CPU time the hypervisor took from this virtual machine ("steal", `/proc/stat`) while a
/// benchmark ran. On a shared host it swings from nothing to most of the machine within minutes,
/// and every figure measured meanwhile with it: the benchmarks report it beside their results.
public enum HostSteal {
    private static let start = ticks()

    /// Marks the start of the measurement (call first thing).
    public static func begin() { _ = start }

    /// The share of all CPU time since ``begin()`` that was stolen, in percent (nil where
    /// `/proc/stat` cannot be read).
    public static var percentSinceBegin: Double? {
        guard let start, let now = ticks(), now.total > start.total else { return nil }
        return 100 * Double(now.steal - start.steal) / Double(now.total - start.total)
    }

    /// The first line of `/proc/stat`: `cpu user nice system idle iowait irq softirq steal ...`.
    private static func ticks() -> (steal: Int, total: Int)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = text.split(separator: "\n").first
        else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        guard fields.count >= 8 else { return nil }
        return (fields[7], fields.prefix(8).reduce(0, +))
    }
}

/// Prints the benchmark's last line: one JSON object with keys in the given order, then the
/// host's steal time since ``HostSteal/begin()`` (`host_steal_percent`), with a warning above 5 %.
public func printJSONLine(_ fields: [(String, Any)]) {
    var fields = fields
    if let steal = HostSteal.percentSinceBegin {
        if steal > 5 {
            print(
                String(
                    format: "warning: the host took %.0f%% of this machine's CPU time during the run (steal): treat the figures with care",
                    steal))
        }
        fields.append(("host_steal_percent", rounded(steal, 1)))
    }
    let body = fields.map { key, value -> String in
        switch value {
        case let text as String: return "\"\(key)\":\"\(text)\""
        case let number as Double: return "\"\(key)\":\(number.isFinite ? String(number) : "null")"
        default: return "\"\(key)\":\(value)"
        }
    }
    print("{" + body.joined(separator: ",") + "}")
}

extension HiredisClient {
    /// A numeric field of `INFO <section>` (0 when absent), summed over the primaries of a cluster.
    public func info(_ section: String, _ field: String) async throws -> Double {
        var total = 0.0
        for reply in try await sendToEveryPrimary(RESPCommand("INFO", .string(section))) {
            total += RedisInfo(reply.string ?? "").number(field) ?? 0
        }
        return total
    }

    /// Redis's CPU time so far (user + system), in seconds.
    public func redisCPUSeconds() async throws -> Double {
        try await info("cpu", "used_cpu_user") + (try await info("cpu", "used_cpu_sys"))
    }
}

/// The pipelined ceiling of exactly some commands on a server: how many operations per second
/// Redis serves when `connections` connections each send `depth` operations per round trip (what
/// `redis-benchmark -c 50 -P 16` does for single commands; this one also sends transactions and
/// mixes of commands, which redis-benchmark cannot).
public enum PipelinedCeiling {
    /// Runs `total` operations; `operation(connection, index)` returns the commands of one.
    public static func operationsPerSecond(
        configuration: HiredisConfiguration, connections: Int = 50, depth: Int = 16, total: Int,
        _ operation: @escaping @Sendable (_ connection: Int, _ index: Int) -> [RESPCommand]
    ) async throws -> Double {
        var opened: [HiredisConnection] = []
        for _ in 0..<connections { opened.append(try await HiredisConnection.connect(configuration: configuration)) }
        let links = opened
        let rounds = max(1, total / (connections * depth))
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, connection) in links.enumerated() {
                group.addTask {
                    for round in 0..<rounds {
                        var commands: [RESPCommand] = []
                        for slot in 0..<depth { commands += operation(index, round * depth + slot) }
                        _ = try await connection.pipeline(commands)
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = (ContinuousClock.now - start).seconds
        for connection in links { connection.close() }
        return Double(rounds * connections * depth) / elapsed
    }
}

extension HiredisConfiguration {
    /// The configuration with the pool size the `POOL_SIZE` environment variable gives, if any (for
    /// A/B runs of the benchmarks).
    public var withBenchmarkPoolSize: HiredisConfiguration {
        var configuration = self
        if let size = ProcessInfo.processInfo.environment["POOL_SIZE"].flatMap({ Int($0) }) { configuration.poolSize = size }
        return configuration
    }
}
