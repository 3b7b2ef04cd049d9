// scripts/bench-store: the session store under 200 concurrent callers against its own
// redis-server, the pipelined Redis-side ceiling of exactly what a touch sends,
// Redis CPU per touch, and Redis memory per session against the application's payload. Last line:
// one JSON object.
import BenchmarkSupport
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import SessionCache

ToolLogging.bootstrap()
HostSteal.begin()

let arguments = CommandLine.arguments.dropFirst()
let operations = arguments.first.flatMap { Int($0) } ?? 200_000
let fillCount = arguments.dropFirst().first.flatMap { Int($0) } ?? 100_000
let callers = 200

var configuration = SessionStoreConfiguration(namespace: "bench")
configuration.defaultMode = .standard
// As deployed with cleanup hooks: the listener's indexes are part of what a session costs.
configuration.expiryListener = true

// `--profile`: only the touch load (callers on the client's event loops), against REDIS_PORT, for
// perf or callgrind A/B runs: throughput and the client's CPU per touch.
if arguments.contains("--profile"), let port = ProcessInfo.processInfo.environment["REDIS_PORT"].flatMap({ Int($0) }) {
    let client = try HiredisClient.started(configuration: HiredisConfiguration(host: "127.0.0.1", port: port).withBenchmarkPoolSize)
    let store = try SessionStore(client: client, configuration: configuration)
    var ids: [String] = []
    for index in 0..<callers { ids.append(try await store.create(user: "load-\(index % 50)").id) }
    let result = try await runLoad(concurrency: callers, total: operations, executors: client.taskExecutors) { [ids] task, _ in
        try await store.touch(ids[task])
    }
    print(
        String(
            format: "touch x %d callers: %.0f ops/s, p50 %.1f µs, client CPU %.2f µs per touch", callers, result.opsPerSecond,
            result.latencyMicroseconds(atPercentile: 50), result.cpuMicrosecondsPerOperation))
    await client.close()
    exit(0)
}

let server = try await RedisServer.start(.init(notifyKeyspaceEvents: "Ex"))
// The client as configured by default (a connection per event loop), callers spread over its loops.
let client = try HiredisClient.started(configuration: server.configuration.withBenchmarkPoolSize)
let store = try SessionStore(client: client, configuration: configuration)

print("bench-store: \(operations) operations per measurement, \(callers) callers, redis-server on port \(server.port)")
var sessions: [String] = []
for index in 0..<callers { sessions.append(try await store.create(user: "load-\(index % 50)", metadata: ["plan": "pro"]).id) }
let ids = sessions

// Touch, three rounds alternating with the pipelined ceiling of exactly what a touch sends: this
// instance knows each session's timer and the sessions are far from their deadline, so a touch is
// one PEXPIRE <timer> <idle> (redis-benchmark -c 50 -P 16 measures its ceiling).
let sampleTimer = try await client.scanKeys(matching: store.keyspace.timerPattern(ids[0])).first ?? ""
// Our callers prefer the client's event loops (`client.taskExecutors`, the setup the README
// recommends for work that waits on Redis); the same on Swift's global executor for comparison.
var touchRuns: [(LoadResult, Double)] = []
var globalTouchRuns: [LoadResult] = []
var ceilingRuns: [Double] = []
for _ in 0..<3 {
    let cpuBefore = try await client.redisCPUSeconds()
    let result = try await runLoad(concurrency: callers, total: operations, executors: client.taskExecutors) { task, _ in
        try await store.touch(ids[task])
    }
    let cpu = try await client.redisCPUSeconds() - cpuBefore
    touchRuns.append((result, cpu / Double(result.operations) * 1e6))
    globalTouchRuns.append(try await runLoad(concurrency: callers, total: operations) { task, _ in try await store.touch(ids[task]) })
    ceilingRuns.append(
        try await RedisBenchmark.requestsPerSecond(
            port: server.port, test: "", clients: 50, pipeline: 16, requests: operations * 4,
            extra: ["PEXPIRE", sampleTimer, "1800000"]))
}
let (touch, cpuPerTouch) = touchRuns.sorted { $0.0.opsPerSecond < $1.0.opsPerSecond }[1]
let globalTouch = globalTouchRuns.sorted { $0.opsPerSecond < $1.opsPerSecond }[1]
let ceiling = ceilingRuns.sorted()[1]

let resume = try await runLoad(concurrency: callers, total: operations / 2) { task, _ in
    _ = try await store.resume(ids[task], user: "load-\(task % 50)")
}
let append = try await runLoad(concurrency: callers, total: operations / 4) { task, index in
    try await store.appendTurn(ids[task], user: "question \(index)", assistant: "answer \(index)")
}

print("")
print("operation                   ops/s      p50 µs     p99 µs   client CPU µs/op")
for (name, result) in [("touch", touch), ("touch (global executor)", globalTouch), ("resume", resume), ("appendTurn", append)] {
    print(
        name.padding(toLength: 24, withPad: " ", startingAt: 0)
            + String(
                format: "%9.0f   %9.1f   %9.1f   %9.2f", result.opsPerSecond, result.latencyMicroseconds(atPercentile: 50),
                result.latencyMicroseconds(atPercentile: 99), result.cpuMicrosecondsPerOperation))
}
print(String(format: "touch pipelined ceiling (redis-benchmark -c 50 -P 16 PEXPIRE <timer> <idle>, median of 3): %.0f ops/s", ceiling))
print(
    String(format: "touch: %.2f of the ceiling of what it sends; Redis CPU per touch: %.2f µs", touch.opsPerSecond / ceiling, cpuPerTouch))

// Memory: sessions with 6 metadata fields and 20 messages of 100 bytes, 10 sessions per user.
_ = try await client.send(RESPCommand("FLUSHALL"))
let memoryBefore = try await client.info("memory", "used_memory")
let content = String(repeating: "m", count: 100)
let metadata: [String: JSONValue] = [
    "plan": "professional", "locale": "en-GB", "theme": "dark", "agent": "support-bot", "tenant": "acme-corp", "seats": 25,
]
let rawMetadata = metadata.reduce(0) { $0 + $1.key.utf8.count + MetadataSize.bytes($1.value) }
let fillBatch = 500
for start in stride(from: 0, to: fillCount, by: fillBatch) {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for index in start..<min(start + fillBatch, fillCount) {
            group.addTask {
                let session = try await store.create(user: "user-\(index / 10)", metadata: metadata)
                let messages = (0..<20).map { SessionMessage(role: $0.isMultiple(of: 2) ? "user" : "assistant", content: content) }
                try await store.appendMessages(session.id, messages)
            }
        }
        try await group.waitForAll()
    }
}
let memoryAfter = try await client.info("memory", "used_memory")
// Where the bytes go, for one session.
let keyspace = store.keyspace
let sampleID = try await store.list(user: "user-0", limit: 1).first?.id ?? ""
let sampleKeys =
    [keyspace.session(sampleID), keyspace.messages(sampleID)]
    + (try await client.scanKeys(matching: keyspace.timerPattern(sampleID)))
var line = "one session's keys (MEMORY USAGE):"
for key in sampleKeys {
    line +=
        " \(key.dropFirst(keyspace.prefix(bucket: keyspace.bucket(ofSession: sampleID) ?? 0).count)) \(try await client.send(RESPCommand("MEMORY", "USAGE", .string(key), "SAMPLES", 0)).int ?? 0)"
}
let sampleBucket = keyspace.bucket(ofSession: sampleID) ?? 0
for key in [keyspace.deadlines(bucket: sampleBucket), keyspace.users(bucket: sampleBucket), keyspace.userSessions("user-0")] {
    let usage = try await client.send(RESPCommand("MEMORY", "USAGE", .string(key), "SAMPLES", 0)).int ?? 0
    let members =
        try await client.send(RESPCommand("TYPE", .string(key))).string == "hash"
        ? try await client.send(RESPCommand("HLEN", .string(key))).int ?? 1
        : try await client.send(RESPCommand("ZCARD", .string(key))).int ?? 1
    line += ", \(key) \(usage) for \(members)"
}
print(line)
let bytesPerSession = (memoryAfter - memoryBefore) / Double(fillCount)
// What the application stored: metadata keys and values, and each message's role, content and
// time (8 bytes), plus the user id.
let payloadPerSession = Double(rawMetadata + 20 * (100 + 8) + 10 * 4 + 10 * 9 + "user-00000".utf8.count)
// Every byte the store writes for a session, as stored: key names, hash fields and values, list
// elements, the timer, and its index entries (members and 8-byte scores), read back from Redis.
var writtenPerSession = 0.0
do {
    var bytes = sampleKeys.reduce(0) { $0 + $1.utf8.count }
    for value in try await client.send(RESPCommand("HGETALL", .string(sampleKeys[0]))).array ?? [] { bytes += value.bytes?.count ?? 0 }
    for value in try await client.send(RESPCommand("LRANGE", .string(sampleKeys[1]), 0, -1)).array ?? [] {
        bytes += value.bytes?.count ?? 0
    }
    if sampleKeys.count > 2 { bytes += try await client.send(RESPCommand("GET", .string(sampleKeys[2]))).bytes?.count ?? 0 }
    bytes += 2 * (sampleID.utf8.count + 8)  // the user's index and the deadline index
    writtenPerSession = Double(bytes)
}
print(
    String(
        format:
            "memory: %.0f bytes per session in Redis (every key and index entry); %.0f bytes written (%.2f×); %.0f bytes of application payload (%.2f×)",
        bytesPerSession, writtenPerSession, bytesPerSession / writtenPerSession, payloadPerSession, bytesPerSession / payloadPerSession))

// One user with 200,000 sessions (no cap): no call may hold Redis long. The newest half ends by
// itself first, so its index entries are stale at the end list reads from (the worst case).
let bigUserSessions = 200_000
var bigConfiguration = SessionStoreConfiguration(namespace: "bench-big")
bigConfiguration.limits.maxSessionsPerUser = nil
let bigStore = try SessionStore(client: client, configuration: bigConfiguration)
_ = try await bigStore.list(user: "big-user", limit: 1)  // loads the library before the clock runs
_ = try await runLoad(concurrency: callers, total: bigUserSessions / 2) { _, _ in _ = try await bigStore.create(user: "big-user") }
_ = try await runLoad(concurrency: callers, total: bigUserSessions / 2) { _, _ in
    _ = try await bigStore.create(user: "big-user", mode: .custom(.seconds(1)))
}
try await Task.sleep(for: .seconds(2))
_ = try await client.send(RESPCommand("CONFIG", "SET", "slowlog-log-slower-than", "0"))
_ = try await client.send(RESPCommand("CONFIG", "SET", "slowlog-max-len", "100000"))
_ = try await client.send(RESPCommand("SLOWLOG", "RESET"))
var listTimes: [Double] = []
for _ in 0..<5 {
    let start = ContinuousClock.now
    _ = try await bigStore.list(user: "big-user", limit: 50)
    listTimes.append((ContinuousClock.now - start).milliseconds)
}
_ = try await bigStore.count(user: "big-user")
for _ in 0..<100 { _ = try await bigStore.create(user: "big-user") }
let deleteStart = ContinuousClock.now
let deleted = try await bigStore.deleteAll(user: "big-user")
let deleteUserMilliseconds = (ContinuousClock.now - deleteStart).milliseconds
// The longest command Redis ran in this phase (SLOWLOG: µs of Redis's own time per command).
let slowlog = try await client.send(RESPCommand("SLOWLOG", "GET", "-1")).array ?? []
let maxCallMicroseconds = slowlog.compactMap { $0.array?[2].int }.max() ?? 0
print(
    String(
        format: "one user with %d sessions: list 50 %.2f ms (median of 5), log-out-everywhere %.0f ms (%d ended), longest call %.2f ms",
        bigUserSessions, listTimes.sorted()[2], deleteUserMilliseconds, deleted, Double(maxCallMicroseconds) / 1000))

await client.close()
await server.stop()
printJSONLine([
    ("bench", "store"),
    ("touch_ops_per_s", rounded(touch.opsPerSecond, 0)),
    ("touch_ratio_vs_sent_ceiling", rounded(touch.opsPerSecond / ceiling)),
    ("touch_ratio_vs_sent_ceiling_global_executor", rounded(globalTouch.opsPerSecond / ceiling)),
    ("redis_cpu_us_per_touch", rounded(cpuPerTouch)),
    ("client_cpu_us_per_touch", rounded(touch.cpuMicrosecondsPerOperation)),
    ("bytes_per_session", rounded(bytesPerSession, 0)),
    ("raw_bytes_per_session", rounded(writtenPerSession, 0)),
    ("payload_bytes_per_session", rounded(payloadPerSession, 0)),
    ("big_user_sessions", Double(bigUserSessions)),
    ("max_call_ms", rounded(Double(maxCallMicroseconds) / 1000)),
    ("list50_ms", rounded(listTimes.sorted()[2])),
    ("delete_user_ms", rounded(deleteUserMilliseconds, 0)),
])

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}

enum MetadataSize {
    static func bytes(_ value: JSONValue) -> Int {
        switch value {
        case .string(let text): return text.utf8.count
        case .number: return 8
        default: return 8
        }
    }
}
