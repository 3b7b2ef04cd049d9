// scripts/bench-expiry: hook lateness with 3 listeners against its own redis-server, and in the
// same run the lateness of Redis's own expired events for plain keys with the same deadlines.
//
// N sessions (default 1,000,000) get deadlines spread evenly over a 60-second window that starts
// after all of them exist. Last line: one JSON object.
import BenchmarkSupport
import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import Logging
import ServiceLifecycle
import SessionCache
import Synchronization

let arguments = CommandLine.arguments.dropFirst()
let count = arguments.first.flatMap { Int($0) } ?? 1_000_000
let window = arguments.dropFirst().first.flatMap { Int($0) }.map { Duration.seconds($0) } ?? .seconds(60)

func nowMilliseconds() -> Int { Int((Date().timeIntervalSince1970 * 1000).rounded()) }

// EXPIRY_BENCH_NO_EVENTS=1: no keyspace notifications at all (sweep only), to see what events cost.
let noEvents = ProcessInfo.processInfo.environment["EXPIRY_BENCH_NO_EVENTS"] == "1"
let server = try await RedisServer.start(.init(notifyKeyspaceEvents: noEvents ? nil : "KEx"))
let setupClient = try HiredisClient(configuration: server.configuration)
var storeConfiguration = SessionStoreConfiguration(namespace: "bench")
storeConfiguration.expiryListener = true
let store = try SessionStore(client: setupClient, configuration: storeConfiguration)
print("bench-expiry: \(count) sessions over \(window), 3 listeners, redis-server on port \(server.port)")

// 1. Create the sessions (long idle timeout for now).
let createStart = ContinuousClock.now
var ids = [String](repeating: "", count: count)
var timers = [String](repeating: "", count: count)
let batch = 2000
for start in stride(from: 0, to: count, by: batch) {
    let made = try await withThrowingTaskGroup(of: (Int, Session).self) { group in
        for index in start..<min(start + batch, count) {
            group.addTask { (index, try await store.create(user: "user-\(index % 10_000)", mode: .custom(.seconds(7200)))) }
        }
        var made: [(Int, Session)] = []
        for try await pair in group { made.append(pair) }
        return made
    }
    for (index, session) in made {
        ids[index] = session.id
        timers[index] = store.keyspace.timer(
            session.id, idleMilliseconds: 7_200_000, deadline: Int((session.absoluteDeadline.timeIntervalSince1970 * 1000).rounded()))
    }
}
print(String(format: "created %d sessions in %.1f s", count, (ContinuousClock.now - createStart).seconds))

// 2. Deadlines evenly over the window, starting in 2 s: the sessions' timers and hints, and as
//    many plain control keys with the same deadlines (nobody sweeps those: Redis's own lateness).
// Setting 3 million keys takes a while: the window starts after that (about 25 µs a session here).
let windowStart = nowMilliseconds() + 2000 + count / 40
let windowMilliseconds = window.components.seconds * 1000
func deadline(_ index: Int) -> Int { windowStart + Int(Double(windowMilliseconds) * Double(index) / Double(count)) }
for start in stride(from: 0, to: count, by: 5000) {
    var commands: [RESPCommand] = []
    for index in start..<min(start + 5000, count) {
        let id = ids[index]
        commands.append(RESPCommand("PEXPIREAT", .string(timers[index]), .integer(deadline(index))))
        let bucket = store.keyspace.bucket(ofSession: id) ?? 0
        commands.append(RESPCommand("ZADD", .string(store.keyspace.deadlines(bucket: bucket)), .integer(deadline(index)), .string(id)))
        commands.append(RESPCommand("SET", .string("control:\(index)"), "1", "PXAT", .integer(deadline(index))))
    }
    _ = try await setupClient.pipeline(commands)
}
let indexOf = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })

// 3. Redis's own events for the control keys.
let control = Mutex(Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three))
let controlSeen = Atomic<Int>(0)
let subscriber = HiredisSubscriber(configuration: server.configuration)
try await subscriber.subscribe(patterns: ["__keyspace@0__:control:*"])
let controlTask = Task {
    for await event in subscriber.events {
        guard case .message(let channel, _, let payload) = event, String(buffer: payload) == "expired" else { continue }
        guard let index = Int(channel.dropFirst("__keyspace@0__:control:".count)) else { continue }
        let late = max(0, nowMilliseconds() - deadline(index))
        control.withLock { _ = $0.record(UInt64(late)) }
        if controlSeen.add(1, ordering: .relaxed).newValue == count { break }
    }
}

// 4. Three listeners, each with its own connections, recording every hook.
struct HookLog: Sendable {
    var lateness = Histogram<UInt64>(highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: .three)
    var calls: [Int32]
    var distinct = 0
}
let log = Mutex(HookLog(calls: [Int32](repeating: 0, count: count)))
let (done, doneSignal) = AsyncStream.makeStream(of: Void.self)
var groups: [(ServiceGroup, Task<Void, any Error>, HiredisClient)] = []
for _ in 0..<3 {
    let client = try HiredisClient(configuration: server.configuration)
    let listenerStore = try SessionStore(client: client, configuration: storeConfiguration)
    var configuration = ExpiryListenerConfiguration()
    configuration.sweepInterval = .milliseconds(100)
    configuration.enableKeyspaceNotifications = !noEvents
    let listener = ExpiryListener(store: listenerStore, configuration: configuration) { expired in
        guard let index = indexOf[expired.session.id] else { return }
        let late = max(0, nowMilliseconds() - deadline(index))
        let finished = log.withLock { log -> Bool in
            log.calls[index] += 1
            if log.calls[index] == 1 {
                log.distinct += 1
                _ = log.lateness.record(UInt64(late))
            }
            return log.distinct == count
        }
        if finished { doneSignal.yield() }
    }
    let group = ServiceGroup(services: [listener], logger: Logger(label: "bench"))
    groups.append((group, Task { try await group.run() }, client))
}

// 5. Wait for every hook, at most the window plus a minute.
let waiter = Task {
    for await _ in done { return true }
    return false
}
let timeout = Task {
    try? await Task.sleep(for: window + .seconds(62))
    doneSignal.finish()
}
let allRan = await waiter.value
timeout.cancel()
try? await Task.sleep(for: .seconds(2))  // late duplicates would show up here
for (group, task, client) in groups {
    await group.triggerGracefulShutdown()
    _ = await task.result
    await client.close()
}
controlTask.cancel()
await subscriber.close()

let result = log.withLock { $0 }
let lost = result.calls.filter { $0 == 0 }.count
let duplicates = result.calls.reduce(0) { $0 + max(0, Int($1) - 1) }
let redisEvents = control.withLock { $0 }
print(
    String(
        format: "hooks: %d of %d ran (%@), lateness p50 %d ms, p99 %d ms, max %d ms; duplicates %d",
        result.distinct, count, allRan ? "all" : "some missing", result.lateness.valueAtPercentile(50),
        result.lateness.valueAtPercentile(99), result.lateness.maxRecorded, duplicates))
print(
    String(
        format: "Redis's own expired events for %d control keys: p50 %d ms, p99 %d ms, max %d ms", redisEvents.totalCount,
        redisEvents.valueAtPercentile(50), redisEvents.valueAtPercentile(99), redisEvents.maxRecorded))
await setupClient.close()
await server.stop()
printJSONLine([
    ("bench", "expiry"), ("sessions", count), ("hook_p50_ms", Int(result.lateness.valueAtPercentile(50))),
    ("hook_p99_ms", Int(result.lateness.valueAtPercentile(99))), ("hook_max_ms", Int(result.lateness.maxRecorded)), ("lost", lost),
    ("duplicates", duplicates), ("redis_event_p99_ms", Int(redisEvents.valueAtPercentile(99))),
])
