// scripts/bench-expiry: cleanup-hook lateness with 3 expiry listeners in 3 processes (as in
// production) against their own redis-server, and in the same run (after it, so that the two do not
// compete for the CPU) the lateness of Redis's own expired events for as many plain keys with the
// same spread of deadlines, on a second redis-server.
//
// N sessions (default 1,000,000) get deadlines spread evenly over a window (default 60 s) that
// starts after all of them exist. Each listener process records every hook it runs (which
// session, how late); the coordinator merges them: lost (never ran) and duplicated (ran twice).
// Redis CPU and the listeners' CPU are divided by N. Last line: one JSON object.
//
//   ExpiryBenchmark [sessions] [window seconds]
//   ExpiryBenchmark --listener URL WINDOW_START_MS WINDOW_MS COUNT RESULT_FILE   (internal)
// EXPIRY_BENCH_CLUSTER=1: the sessions live on an embedded 3-primary Redis Cluster.
import BenchmarkSupport
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SessionCache
import Synchronization

ToolLogging.bootstrap()
HostSteal.begin()

#if canImport(Glibc)
    import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
let namespace = "bench"

/// The deadline of session `index`: evenly over the window.
func deadline(_ index: Int, start: Int, window: Int, count: Int) -> Int { start + Int(Double(window) * Double(index) / Double(count)) }

func wallMilliseconds() -> Int { Int((Date().timeIntervalSince1970 * 1000).rounded()) }

/// What one listener process reports.
struct ListenerResult: Codable {
    var hooks: [Int32] = []  // session index per hook run, in order
    var latenessMilliseconds: [Int32] = []
    var cpuSeconds = 0.0
}

if arguments.first == "--listener" {
    // A listener process: an app-server instance of its own.
    guard arguments.count == 6, var redis = try? HiredisConfiguration(url: arguments[1]), let windowStart = Int(arguments[2]),
        let window = Int(arguments[3]), let count = Int(arguments[4])
    else { fatalError("usage: --listener URL WINDOW_START_MS WINDOW_MS COUNT RESULT_FILE") }
    redis.clientName = "bench-listener"
    let client = try HiredisClient.started(configuration: redis)
    var configuration = SessionStoreConfiguration(namespace: namespace)
    configuration.expiryListener = true
    let store = try SessionStore(client: client, configuration: configuration)
    let recorded = Mutex(ListenerResult())
    var listenerConfiguration = ExpiryListenerConfiguration()
    // EXPIRY_BENCH_NO_EVENTS=1: no keyspace notifications (the sweep alone), to see what they cost.
    listenerConfiguration.keyspaceNotifications = ProcessInfo.processInfo.environment["EXPIRY_BENCH_NO_EVENTS"] != "1"
    let listener = ExpiryListener(store: store, configuration: listenerConfiguration) { expired in
        guard case .number(let value)? = expired.session.metadata["i"] else { return }
        let index = Int(value)
        let late = wallMilliseconds() - deadline(index, start: windowStart, window: window, count: count)
        recorded.withLock { result in
            result.hooks.append(Int32(index))
            result.latenessMilliseconds.append(Int32(clamping: max(0, late)))
        }
    }
    // Progress for the coordinator: how many hooks this process ran, every 200 ms.
    let progress = Task {
        var reported = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            let ran = recorded.withLock { $0.hooks.count }
            if ran > reported {
                _ = try? await client.send(RESPCommand("INCRBY", "bench-progress:hooks", .integer(ran - reported)))
                reported = ran
            }
        }
    }
    let cpuBefore = processCPUSeconds()
    let group = ServiceGroup(services: [listener], gracefulShutdownSignals: [.sigterm], logger: Logger(label: "bench-listener"))
    try await group.run()
    progress.cancel()
    var result = recorded.withLock { $0 }
    result.cpuSeconds = processCPUSeconds() - cpuBefore
    try JSONEncoder().encode(result).write(to: URL(fileURLWithPath: arguments[5]))
    await client.close()
    exit(0)
}

let count = arguments.first.flatMap { Int($0) } ?? 1_000_000
let windowSeconds = arguments.dropFirst().first.flatMap { Int($0) } ?? 60
let window = windowSeconds * 1000
let listenerProcesses = Int(ProcessInfo.processInfo.environment["EXPIRY_BENCH_LISTENERS"] ?? "") ?? 3

let noEvents = ProcessInfo.processInfo.environment["EXPIRY_BENCH_NO_EVENTS"] == "1"
let onCluster = ProcessInfo.processInfo.environment["EXPIRY_BENCH_CLUSTER"] == "1"
// What the listener itself enables (keyspace channels, expired events): no keyevent channel, which
// nobody reads and which Redis would publish on for every expired key.
let serverOptions = RedisServer.Options(notifyKeyspaceEvents: noEvents ? nil : "Kx")
let server: RedisServer? = onCluster ? nil : try await RedisServer.start(serverOptions)
let cluster: RedisCluster? =
    onCluster
    ? try await {
        var options = RedisCluster.Options()
        options.node = serverOptions
        return try await RedisCluster.start(options)
    }() : nil
let dataURL = server?.url ?? cluster!.url
let controlServer = try await RedisServer.start(.init(notifyKeyspaceEvents: "KEx"))
let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: dataURL))
let controlClient = try HiredisClient.started(configuration: controlServer.configuration)
var storeConfiguration = SessionStoreConfiguration(namespace: namespace)
storeConfiguration.expiryListener = true
let store = try SessionStore(client: client, configuration: storeConfiguration)
let keyspace = store.keyspace
print(
    "bench-expiry: \(count) sessions over \(windowSeconds) s, \(listenerProcesses) listener processes, keyspace notifications \(noEvents ? "off" : "on"), on \(dataURL)"
)

// 1. Create the sessions (long idle timeout for now), each carrying its index.
let createStart = ContinuousClock.now
var ids = [String](repeating: "", count: count)
var timers = [String](repeating: "", count: count)
let batch = 2000
for start in stride(from: 0, to: count, by: batch) {
    let made = try await withThrowingTaskGroup(of: (Int, Session).self) { group in
        for index in start..<min(start + batch, count) {
            group.addTask {
                (
                    index,
                    try await store.create(
                        user: "user-\(index % 10_000)", metadata: ["i": .number(Double(index))], mode: .custom(.seconds(7200)))
                )
            }
        }
        var made: [(Int, Session)] = []
        for try await pair in group { made.append(pair) }
        return made
    }
    for (index, session) in made {
        ids[index] = session.id
        timers[index] = keyspace.timer(
            session.id, idleMilliseconds: 7_200_000, deadline: Int((session.absoluteDeadline.timeIntervalSince1970 * 1000).rounded()))
    }
}
print(String(format: "created %d sessions in %.1f s", count, (ContinuousClock.now - createStart).seconds))

// 2. Deadlines evenly over the window: each session's timer and its hint, and as many plain control
//    keys with the same deadlines on the control server (nobody sweeps those: Redis's own lateness).
//    Setting them takes a while: the window starts after that, with time to start the listeners.
//    How long it takes is measured on the first thousand (their deadlines are set again after).
func redisMilliseconds() async throws -> Int {
    let time = try await client.send(RESPCommand("TIME")).array ?? []
    return (time.first?.int ?? 0) * 1000 + (time.last?.int ?? 0) / 1000
}
let probeStart = ContinuousClock.now
_ = try await client.pipeline((0..<min(1000, count)).map { RESPCommand("PTTL", .string(timers[$0])) })
let perSession = (ContinuousClock.now - probeStart).seconds / Double(min(1000, count))
let windowStart = try await redisMilliseconds() + 4000 + Int(Double(count) * perSession * 4 * 1000)
for start in stride(from: 0, to: count, by: 5000) {
    var commands: [RESPCommand] = []
    for index in start..<min(start + 5000, count) {
        let due = deadline(index, start: windowStart, window: window, count: count)
        commands.append(RESPCommand("PEXPIREAT", .string(timers[index]), .integer(due)))
        let bucket = keyspace.bucket(ofSession: ids[index]) ?? 0
        let timing = keyspace.timing(ofTimer: timers[index])!
        commands.append(
            RESPCommand(
                "ZADD", .string(keyspace.deadlines(bucket: bucket)), .integer(due),
                .string(keyspace.deadlineEntry(ids[index], idleMilliseconds: timing.idleMilliseconds, deadline: timing.deadline))))
    }
    _ = try await client.pipeline(commands)
}
ids = []
timers = []
print("deadlines set; the window starts in \(max(0, windowStart - wallMilliseconds())) ms")

// 4. The listener processes.
let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-expiry-\(UUID().uuidString.prefix(8))")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: directory) }
let output = NIOLockedValueBox<[String]>([])
var listeners: [(ChildProcess, URL)] = []
_ = try await client.sendToEveryPrimary(RESPCommand("CONFIG", "RESETSTAT"))
// EXPIRY_BENCH_FUNCTIONS=1: log every call (SLOWLOG with a 0 µs threshold) to show each function's
// cost, over the last `slowlogSample` calls (a whole run's log, read in one reply, took 23 GB).
let profileFunctions = ProcessInfo.processInfo.environment["EXPIRY_BENCH_FUNCTIONS"] == "1"
let slowlogSample = 50_000
if profileFunctions {
    _ = try await client.send(RESPCommand("CONFIG", "SET", "slowlog-log-slower-than", "0"))
    _ = try await client.send(RESPCommand("CONFIG", "SET", "slowlog-max-len", .integer(slowlogSample)))
    _ = try await client.send(RESPCommand("SLOWLOG", "RESET"))
}
let cpuBefore = try await client.redisCPUSeconds()
for index in 0..<listenerProcesses {
    let file = directory.appendingPathComponent("listener-\(index).json")
    let process = try ChildProcess(
        executable: executable,
        arguments: ["--listener", dataURL, "\(windowStart)", "\(window)", "\(count)", file.path]
    ) { line in output.withLockedValue { $0.append("listener \(index): \(line)") } }
    listeners.append((process, file))
}

// 5. Wait until every hook ran, at most the window plus a minute; then 2 s for late duplicates.
let limit = ContinuousClock.now + .milliseconds(max(0, windowStart - wallMilliseconds()) + window + 60_000)
var ran = 0
while ContinuousClock.now < limit {
    try await Task.sleep(for: .milliseconds(250))
    ran = try await client.send(RESPCommand("GET", "bench-progress:hooks")).int ?? 0
    if ran >= count { break }
}
let cpuAfter = try await client.redisCPUSeconds()
// Where Redis's time went: the most expensive commands, with calls and time per hook.
var costs: [(name: String, calls: Int, usec: Int)] = []
for reply in try await client.sendToEveryPrimary(RESPCommand("INFO", "commandstats")) {
    for (name, statistics) in RedisInfo(reply.string ?? "").commandStatistics {
        costs.append((name, statistics.calls, statistics.microseconds))
    }
}
if profileFunctions {
    var byFunction: [String: (calls: Int, usec: Int)] = [:]
    for entry in try await client.send(RESPCommand("SLOWLOG", "GET", .integer(slowlogSample))).array ?? [] {
        guard let fields = entry.array, fields.count >= 4, let usec = fields[2].int, let command = fields[3].array else { continue }
        let words = command.compactMap(\.string)
        let name = words.first?.uppercased().hasPrefix("FCALL") == true && words.count > 1 ? words[1] : (words.first ?? "?")
        byFunction[name, default: (0, 0)].calls += 1
        byFunction[name, default: (0, 0)].usec += usec
    }
    let sampled = max(1, byFunction.values.reduce(0) { $0 + $1.usec })
    print("the last \(slowlogSample) calls, by function:")
    for (name, cost) in byFunction.sorted(by: { $0.value.usec > $1.value.usec }).prefix(8) {
        print(
            String(
                format: "  %-28@ %8d calls, %7.1f µs each, %5.1f%% of the sampled time", name as NSString, cost.calls,
                Double(cost.usec) / Double(max(1, cost.calls)), 100 * Double(cost.usec) / Double(sampled)))
    }
}
// One line per command, summed over the primaries of a cluster.
costs = Dictionary(grouping: costs, by: \.name).map { name, parts in
    (name, parts.reduce(0) { $0 + $1.calls }, parts.reduce(0) { $0 + $1.usec })
}
for cost in costs.sorted(by: { $0.usec > $1.usec }).prefix(8) {
    print(
        String(
            format: "  %-10@ %9d calls, %6.2f per hook, %6.1f µs of Redis time per hook", cost.name as NSString, cost.calls,
            Double(cost.calls) / Double(count), Double(cost.usec) / Double(count)))
}
try await Task.sleep(for: .seconds(2))
for (process, _) in listeners { process.send(SIGTERM) }
var calls = [Int32](repeating: 0, count: count)
var lateness = Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three)
// The lateness in each tenth of the window, to tell a start-up lag from a backlog.
var tenths = (0..<10).map { _ in Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .two) }
var listenerCPU = 0.0
for (number, (process, file)) in listeners.enumerated() {
    _ = await process.waitForExit(timeout: .seconds(60))
    guard let data = try? Data(contentsOf: file), let result = try? JSONDecoder().decode(ListenerResult.self, from: data) else {
        print("a listener left no result:")
        for line in output.withLockedValue({ $0 }).suffix(20) { print(line) }
        continue
    }
    var own = Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .two)
    for late in result.latenessMilliseconds { _ = own.record(UInt64(late)) }
    print(
        "listener \(number): \(result.hooks.count) hooks, lateness p50 \(own.valueAtPercentile(50)) ms, p99 \(own.valueAtPercentile(99)) ms, CPU \(String(format: "%.1f", result.cpuSeconds)) s"
    )
    for (index, late) in zip(result.hooks, result.latenessMilliseconds) {
        calls[Int(index)] += 1
        if calls[Int(index)] == 1 {
            _ = lateness.record(UInt64(late))
            _ = tenths[min(9, Int(index) * 10 / count)].record(UInt64(late))
        }
    }
    listenerCPU += result.cpuSeconds
}

// What the listeners logged (warnings and errors: ToolLogging), so that a slow run can be explained.
let logged = output.withLockedValue { $0 }
if !logged.isEmpty {
    print("the listeners logged \(logged.count) lines; the last ones:")
    for line in logged.suffix(10) { print("  \(line)") }
}
print(
    "lateness p50/p99 (ms) by tenth of the window: "
        + tenths.map { "\($0.valueAtPercentile(50))/\($0.valueAtPercentile(99))" }.joined(separator: " "))
// 6. Redis's own expired events for as many plain keys with the same spread of deadlines, on the
//    control server, after the sessions' window (so that the two do not compete for the CPU).
let controlLateness = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three))
let subscriber = HiredisSubscriber.started(configuration: controlServer.configuration)
try await subscriber.subscribe(patterns: ["__keyspace@0__:control:*"])
let controlStart = try await redisMilliseconds() + 3000 + Int(Double(count) * perSession * 2 * 1000)
for start in stride(from: 0, to: count, by: 5000) {
    _ = try await controlClient.pipeline(
        (start..<min(start + 5000, count)).map {
            RESPCommand(
                "SET", .string("control:\($0)"), "1", "PXAT", .integer(deadline($0, start: controlStart, window: window, count: count)))
        })
}
let controlTask = Task {
    var seen = 0
    for await event in subscriber.events {
        guard case .message(let channel, _, let payload) = event, String(buffer: payload) == "expired" else { continue }
        guard let index = Int(channel.dropFirst("__keyspace@0__:control:".count)) else { continue }
        let late = max(0, wallMilliseconds() - deadline(index, start: controlStart, window: window, count: count))
        controlLateness.withLock { _ = $0.record(UInt64(late)) }
        seen += 1
        if seen == count { break }
    }
}
let controlLimit = ContinuousClock.now + .milliseconds(max(0, controlStart - wallMilliseconds()) + window + 60_000)
while ContinuousClock.now < controlLimit, controlLateness.withLock({ $0.totalCount }) < count {
    try await Task.sleep(for: .milliseconds(250))
}
controlTask.cancel()
await subscriber.close()

let lost = calls.filter { $0 == 0 }.count
let duplicates = calls.reduce(0) { $0 + max(0, Int($1) - 1) }
let redisEvents = controlLateness.withLock { $0 }
let redisCPUPerHook = (cpuAfter - cpuBefore) / Double(count) * 1e6
let clientCPUPerHook = listenerCPU / Double(count) * 1e6
print(
    String(
        format: "hooks: %d of %d ran, lateness p50 %d ms, p99 %d ms, max %d ms; lost %d, duplicates %d", count - lost, count,
        lateness.valueAtPercentile(50), lateness.valueAtPercentile(99), lateness.maxRecorded, lost, duplicates))
print(
    String(
        format: "Redis CPU %.1f µs per hook; the listeners' CPU %.1f µs per hook (3 processes together)", redisCPUPerHook, clientCPUPerHook)
)
print(
    String(
        format: "Redis's own expired events for %d control keys: p50 %d ms, p99 %d ms, max %d ms", redisEvents.totalCount,
        redisEvents.valueAtPercentile(50), redisEvents.valueAtPercentile(99), redisEvents.maxRecorded))
await client.close()
await controlClient.close()
await server?.stop()
await cluster?.stop()
await controlServer.stop()
printJSONLine([
    ("bench", "expiry"), ("sessions", count), ("listener_processes", listenerProcesses),
    ("hook_p50_ms", Int(lateness.valueAtPercentile(50))),
    ("hook_p99_ms", Int(lateness.valueAtPercentile(99))), ("hook_max_ms", Int(lateness.maxRecorded)), ("lost", lost),
    ("duplicates", duplicates), ("redis_event_p99_ms", Int(redisEvents.valueAtPercentile(99))),
    ("redis_cpu_us_per_hook", rounded(redisCPUPerHook, 1)), ("client_cpu_us_per_hook", rounded(clientCPUPerHook, 1)),
])
