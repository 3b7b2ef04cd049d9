// scripts/bench-locks: session locks against their own redis-server.
//
// Uncontended acquire+release pairs per second with 200 callers on distinct sessions, against the
// pipelined ceiling of exactly the commands a pair sends (the take function, then the release
// function) on the same server (a runner of our own: redis-benchmark cannot alternate commands),
// with Redis CPU per pair; then handoff latency with 8 contending
// tasks on each of 3 instances on one session, each doing fenced read-modify-write increments.
// Last line: one JSON object.
import BenchmarkSupport
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
@_spi(Benchmarks) import SessionCache
import Synchronization

ToolLogging.bootstrap()
HostSteal.begin()

let arguments = CommandLine.arguments.dropFirst()
let pairs = arguments.first.flatMap { Int($0) } ?? 200_000
let increments = arguments.dropFirst().first.flatMap { Int($0) } ?? 300

let server = try await RedisServer.start(.init(notifyKeyspaceEvents: "KEx"))
// The client as configured by default (a connection per event loop), callers spread over its loops.
let client = try HiredisClient.started(configuration: server.configuration.withBenchmarkPoolSize)
let store = try SessionStore(client: client, configuration: SessionStoreConfiguration(namespace: "bench"))
let locks = SessionLock(store: store)
Task { try? await locks.run() }
print("bench-locks: \(pairs) uncontended pairs, 3 instances x 8 tasks x \(increments) increments, redis-server on port \(server.port)")

// 1. Uncontended: 200 callers, each on its own session.
var sessions: [String] = []
for index in 0..<200 { sessions.append(try await store.create(user: "u\(index)", mode: .lenient).id) }
let ids = sessions
// LOCK_BENCH_PROFILE=1: only the uncontended pairs on the event loops, once (for perf).
if ProcessInfo.processInfo.environment["LOCK_BENCH_PROFILE"] == "1" {
    let result = try await runLoad(concurrency: 200, total: pairs, executors: client.taskExecutors) { task, _ in
        let lease = try await locks.acquire(ids[task])
        try await locks.release(lease)
    }
    print(String(format: "uncontended: %.0f pairs/s, client CPU %.2f µs per pair", result.opsPerSecond, result.cpuMicrosecondsPerOperation))
    exit(0)
}
// Callers and the ceiling's runner prefer the client's event loops (`client.taskExecutors`); the
// pairs run again on Swift's global executor for comparison.
var uncontendedRuns: [(Double, Double)] = []
var globalRuns: [Double] = []
var ceilingRuns: [Double] = []
let pipelineDepth = 16
for _ in 0..<3 {
    let cpuBefore = try await client.redisCPUSeconds()
    let result = try await runLoad(concurrency: 200, total: pairs, executors: client.taskExecutors) { task, _ in
        let lease = try await locks.acquire(ids[task])
        try await locks.release(lease)
    }
    uncontendedRuns.append((result.opsPerSecond, (try await client.redisCPUSeconds() - cpuBefore) / Double(result.operations) * 1e6))
    globalRuns.append(
        try await runLoad(concurrency: 200, total: pairs) { task, _ in
            let lease = try await locks.acquire(ids[task])
            try await locks.release(lease)
        }.opsPerSecond)

    // The same commands, pipelined: 50 connections' worth of callers, 16 pairs per round trip.
    let ceiling = try await runLoad(concurrency: 50, total: pairs / pipelineDepth, executors: client.taskExecutors) { task, _ in
        var commands: [RESPCommand] = []
        for slot in 0..<pipelineDepth {
            let lockKey = SessionLock.benchmarkLockKey(store: store, id: ids[(task * pipelineDepth + slot) % ids.count])
            let token = "t\(task)-\(slot)"
            commands += SessionLock.benchmarkAcquire(lockKey: lockKey, token: token)
            commands.append(SessionLock.benchmarkRelease(lockKey: lockKey, token: token))
        }
        _ = try await client.pipeline(commands)
    }
    ceilingRuns.append(ceiling.opsPerSecond * Double(pipelineDepth))
}
let (uncontended, cpuPerPair) = uncontendedRuns.sorted { $0.0 < $1.0 }[1]
let ceiling = ceilingRuns.sorted()[1]
let uncontendedGlobal = globalRuns.sorted()[1]
print(String(format: "uncontended: %.0f acquire+release pairs/s (200 callers), Redis CPU %.2f µs per pair", uncontended, cpuPerPair))
print(String(format: "uncontended, callers on the global executor: %.0f pairs/s", uncontendedGlobal))
print(String(format: "pipelined ceiling of the same commands: %.0f pairs/s; ratio %.2f", ceiling, uncontended / ceiling))

// 2. Contended: 3 instances (own clients and lock objects) x 8 tasks on one session.
let session = try await store.create(user: "contended", mode: .lenient)
let handoffs = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three))
let lastRelease = Atomic<UInt64>(0)
let maxWait = Atomic<UInt64>(0)
let clock = ContinuousClock()
let origin = clock.now
func nanosSinceOrigin() -> UInt64 {
    let (seconds, attoseconds) = (clock.now - origin).components
    return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
}
var instances: [(HiredisClient, SessionStore, SessionLock)] = []
for _ in 0..<3 {
    let instanceClient = try HiredisClient.started(configuration: server.configuration.withBenchmarkPoolSize)
    let instanceStore = try SessionStore(client: instanceClient, configuration: store.configuration)
    let instanceLocks = SessionLock(store: instanceStore)
    Task { try? await instanceLocks.run() }
    instances.append((instanceClient, instanceStore, instanceLocks))
}
let contendedStart = ContinuousClock.now
try await withThrowingTaskGroup(of: Void.self) { group in
    for (_, instanceStore, instanceLocks) in instances {
        for _ in 0..<8 {
            group.addTask {
                for _ in 0..<increments {
                    let asked = nanosSinceOrigin()
                    let lease = try await instanceLocks.acquire(session.id, timeout: .seconds(60))
                    let got = nanosSinceOrigin()
                    let released = lastRelease.load(ordering: .acquiring)
                    if released > 0 && released < got && released > asked { handoffs.withLock { _ = $0.record(got - released) } }
                    _ = maxWait.max(got - asked, ordering: .relaxed)
                    let value = try await instanceStore.metadata(session.id)["counter"]?.numberValue ?? 0
                    try await instanceStore.setMetadata(session.id, key: "counter", value: .number(value + 1), lease: lease)
                    lastRelease.store(nanosSinceOrigin(), ordering: .releasing)
                    try await instanceLocks.release(lease)
                }
            }
        }
    }
    try await group.waitForAll()
}
let contendedSeconds = (ContinuousClock.now - contendedStart).seconds
let expected = 24 * increments
let counted = Int(try await store.metadata(session.id)["counter"]?.numberValue ?? 0)
let histogram = handoffs.withLock { $0 }
let p50 = Double(histogram.valueAtPercentile(50)) / 1e6
let p99 = Double(histogram.valueAtPercentile(99)) / 1e6
let waitMax = Double(maxWait.load(ordering: .relaxed)) / 1e6
print(
    String(
        format:
            "contended: %d increments in %.1f s (%.0f/s), handoff p50 %.2f ms, p99 %.2f ms (%d handoffs), longest wait %.1f ms; counter %d of %d",
        expected, contendedSeconds, Double(expected) / contendedSeconds, p50, p99, histogram.totalCount, waitMax, counted, expected))

for (instanceClient, _, instanceLocks) in instances {
    await instanceLocks.close()
    await instanceClient.close()
}
await locks.close()
await client.close()
await server.stop()
printJSONLine([
    ("bench", "locks"), ("uncontended_pairs_per_s", rounded(uncontended, 0)),
    ("uncontended_ratio_vs_ceiling", rounded(uncontended / ceiling)),
    ("uncontended_ratio_vs_ceiling_global_executor", rounded(uncontendedGlobal / ceiling)),
    ("handoff_p50_ms", rounded(p50, 3)), ("handoff_p99_ms", rounded(p99, 3)), ("lost_updates", expected - counted),
    ("max_wait_ms", rounded(waitMax, 1)),
    ("redis_cpu_us_per_pair", rounded(cpuPerPair)),
])
