// scripts/bench-client: our client against redis-benchmark on the same, freshly started server.
//
// GET and SET of small values with 1, 50 and 200 concurrent callers: ours are tasks sharing one
// client; redis-benchmark uses as many connections without pipelining (-P 1). The server's
// pipelined ceiling is redis-benchmark -c 50 -P 16. Our callers run twice: on Swift's global
// executor (what a task gets by default: each reply hops to another thread) and preferring the
// client's event loops (`client.taskExecutors`, callers spread over them), and the same callers on
// socketless connections for the runtime's floor. Last line: one JSON object.
import BenchmarkSupport
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO

ToolLogging.bootstrap()
HostSteal.begin()

let arguments = CommandLine.arguments.dropFirst()
let requests = arguments.first.flatMap { Int($0) } ?? 200_000
// The library's default pool (a connection per event loop of the default group) unless POOL_SIZE says.
let poolSize = HiredisConfiguration(host: "", port: 0).withBenchmarkPoolSize.poolSize

/// Where our callers' tasks run.
enum Placement: String, CaseIterable {
    case global, eventLoop = "event loop"
}

// `--profile CALLERS`: only our GET load, against REDIS_PORT, for perf/callgrind
// (ON_EVENT_LOOP=1: callers prefer the client's event loop).
if let flag = arguments.firstIndex(of: "--profile"), let callers = Int(arguments[flag + 1]),
    let port = ProcessInfo.processInfo.environment["REDIS_PORT"].flatMap({ Int($0) })
{
    var configuration = HiredisConfiguration(host: "127.0.0.1", port: port)
    configuration.poolSize = poolSize
    let client = try HiredisClient.started(configuration: configuration)
    let onLoop = ProcessInfo.processInfo.environment["ON_EVENT_LOOP"] != nil
    let result = try await runLoad(concurrency: callers, total: requests, executors: onLoop ? client.taskExecutors : []) { _, _ in
        _ = try await client.get("key:__rand_int__")
    }
    print(
        String(
            format: "GET x %d callers: %.0f ops/s, p50 %.1f µs, client CPU %.2f µs per GET", callers, result.opsPerSecond,
            result.latencyMicroseconds(atPercentile: 50), result.cpuMicrosecondsPerOperation))
    await client.close()
    exit(0)
}

// `--runtime-floor CALLERS`: the same load on socketless connections (see `SocketlessConnection`),
// one per event loop of the library's default group, callers preferring those loops.
if let flag = arguments.firstIndex(of: "--runtime-floor"), let callers = Int(arguments[flag + 1]) {
    for _ in 0..<3 {
        let result = try await SocketlessConnection.measure(callers: callers, total: requests)
        print(
            String(
                format: "socketless call x %d callers: %.0f calls/s, client CPU %.2f µs per call", callers, result.opsPerSecond,
                result.cpuMicrosecondsPerOperation))
    }
    exit(0)
}

let server = try await RedisServer.start(.init(notifyKeyspaceEvents: nil))
var configuration = server.configuration
configuration.poolSize = poolSize
let client = try HiredisClient.started(configuration: configuration)
let value = RESPArgument.string("xxx")  // redis-benchmark's default 3-byte value
try await client.set("key:__rand_int__", to: value)

print(
    "bench-client: \(requests) requests per measurement, medians of 3 rounds, our pool size \(poolSize), redis-server on port \(server.port)"
)
print("")
print("command  callers  our tasks on   ours ops/s   redis-benchmark ops/s   ratio   ours p50 µs   theirs p50 µs   ours p99 µs")

// The machine is shared and noisy: each measurement alternates ours and the reference `rounds`
// times and keeps the median of each.
let rounds = 3
var ours: [String: LoadResult] = [:]
var reference: [String: RedisBenchmark.Result] = [:]
for command in ["GET", "SET"] {
    for callers in [1, 50, 200] {
        let count = callers == 1 ? requests / 4 : requests
        var ourRuns: [Placement: [LoadResult]] = [:]
        var referenceRuns: [RedisBenchmark.Result] = []
        for _ in 0..<rounds {
            for placement in Placement.allCases {
                ourRuns[placement, default: []].append(
                    try await runLoad(
                        concurrency: callers, total: count, executors: placement == .eventLoop ? client.taskExecutors : []
                    ) { _, _ in
                        if command == "GET" {
                            _ = try await client.get("key:__rand_int__")
                        } else {
                            try await client.set("key:__rand_int__", to: value)
                        }
                    })
            }
            referenceRuns.append(
                try await RedisBenchmark.run(
                    port: server.port, test: command.lowercased(), clients: callers, pipeline: 1, requests: count))
        }
        let theirs = referenceRuns.sorted { $0.requestsPerSecond < $1.requestsPerSecond }[rounds / 2]
        let theirP50 = referenceRuns.map(\.p50Microseconds).sorted()[rounds / 2]
        reference["\(command)/\(callers)"] = theirs
        for placement in Placement.allCases {
            let runs = ourRuns[placement]!
            let result = runs.sorted { $0.opsPerSecond < $1.opsPerSecond }[rounds / 2]
            ours["\(command)/\(callers)/\(placement.rawValue)"] = result
            let p50 = runs.map { $0.latencyMicroseconds(atPercentile: 50) }.sorted()[rounds / 2]
            print(
                command.padding(toLength: 9, withPad: " ", startingAt: 0)
                    + "\(callers)".padding(toLength: 9, withPad: " ", startingAt: 0)
                    + placement.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)
                    + String(
                        format: "%12.0f   %21.0f   %5.2f   %11.1f   %13.1f   %11.1f", result.opsPerSecond, theirs.requestsPerSecond,
                        result.opsPerSecond / theirs.requestsPerSecond, p50, theirP50,
                        result.latencyMicroseconds(atPercentile: 99)))
        }
    }
}
var ceilings: [Double] = []
for _ in 0..<rounds {
    ceilings.append(
        try await RedisBenchmark.requestsPerSecond(port: server.port, test: "get", clients: 50, pipeline: 16, requests: requests * 5))
}
let ceiling = ceilings.sorted()[rounds / 2]
print("")
print(String(format: "redis-benchmark -t get -c 50 -P 16 (pipelined ceiling, median of %d): %.0f ops/s", rounds, ceiling))

// What the same 200 callers cost with no socket, no encoding and no parsing: Swift's concurrency
// runtime, the event loops and this harness alone (see `SocketlessConnection`).
// One round first, not counted: a fresh set of 200 tasks pays page faults for its memory.
_ = try await SocketlessConnection.measure(callers: 200, total: requests)
var floorRuns: [LoadResult] = []
for _ in 0..<rounds { floorRuns.append(try await SocketlessConnection.measure(callers: 200, total: requests * 2)) }
let floorCPU = floorRuns.map(\.cpuMicrosecondsPerOperation).sorted()[rounds / 2]
let getCPU = ours["GET/200/\(Placement.eventLoop.rawValue)"]!.cpuMicrosecondsPerOperation
print(
    String(
        format: "client CPU per call with 200 callers on the event loops: GET %.2f µs, socketless call %.2f µs (the runtime floor)",
        getCPU, floorCPU))

await client.close()
await server.stop()

/// Our GET median latency with one caller over redis-benchmark's (-c 1 -P 1).
@MainActor func c1LatencyRatio(_ placement: Placement) -> Double {
    ours["GET/1/\(placement.rawValue)"]!.latencyMicroseconds(atPercentile: 50) / reference["GET/1"]!.p50Microseconds
}
let onLoop = Placement.eventLoop.rawValue
printJSONLine([
    ("bench", "client"),
    ("get_c1_p50_ratio_vs_redis_benchmark", rounded(c1LatencyRatio(.eventLoop))),
    ("get_c1_p50_ratio_vs_redis_benchmark_global_executor", rounded(c1LatencyRatio(.global))),
    ("get_c50_ratio_vs_redis_benchmark", rounded(ours["GET/50/\(onLoop)"]!.opsPerSecond / reference["GET/50"]!.requestsPerSecond)),
    ("get_c200_ratio_vs_pipelined_ceiling", rounded(ours["GET/200/\(onLoop)"]!.opsPerSecond / ceiling)),
    ("get_c200_ratio_vs_pipelined_ceiling_global_executor", rounded(ours["GET/200/global"]!.opsPerSecond / ceiling)),
    ("get_c1_p50_us", rounded(ours["GET/1/\(onLoop)"]!.latencyMicroseconds(atPercentile: 50), 1)),
    ("get_c200_client_cpu_us", rounded(getCPU)),
    ("socketless_c200_client_cpu_us", rounded(floorCPU)),
])
