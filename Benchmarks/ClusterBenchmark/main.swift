// scripts/bench-cluster: the session store on the embedded 3-primary Redis Cluster (a replica
// each) against a standalone redis-server in the same run: touch throughput with 200 callers,
// the redirections per second while slots migrate under that load, a node added and slots
// resharded to it under writes (lost, duplicated and indeterminate increments), a primary killed
// under writes (how long writes were unavailable, how many acknowledged writes the promoted
// replica lacked), and the touches on a TLS cluster of the same shape. Hook lateness on the cluster comes from `EXPIRY_BENCH_CLUSTER=1 ExpiryBenchmark`
// (scripts/bench-cluster runs both). Last line: one JSON object.
//
//   ClusterBenchmark [touches per measurement, default 200000]
import BenchmarkSupport
import CoreMetrics
@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache

ToolLogging.bootstrap()
HostSteal.begin()

let operations = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 200_000
let callers = 200

/// Counts the client's counters by label (`redis.redirections`, `redis.retries`), nothing else.
final class CountingMetrics: MetricsFactory, Sendable {
    final class Count: CounterHandler, Sendable {
        let value = NIOLockedValueBox<Int64>(0)
        func increment(by amount: Int64) { value.withLockedValue { $0 += amount } }
        func reset() { value.withLockedValue { $0 = 0 } }
    }
    private let counters = NIOLockedValueBox<[String: Count]>([:])

    func count(_ label: String) -> Int64 { counters.withLockedValue { $0[label] }?.value.withLockedValue { $0 } ?? 0 }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        counters.withLockedValue { counters in
            if let existing = counters[label] { return existing }
            let made = Count()
            counters[label] = made
            return made
        }
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { NOOPMetricsHandler.instance }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

/// A store with `callers` sessions, as deployed with cleanup hooks.
func makeStore(_ configuration: HiredisConfiguration) async throws -> (HiredisClient, SessionStore, [String]) {
    let client = try HiredisClient.started(configuration: configuration)
    var storeConfiguration = SessionStoreConfiguration(namespace: "bench")
    storeConfiguration.expiryListener = true
    let store = try SessionStore(client: client, configuration: storeConfiguration)
    var ids: [String] = []
    for index in 0..<callers { ids.append(try await store.create(user: "load-\(index)", metadata: ["plan": "pro"]).id) }
    return (client, store, ids)
}

/// Touch throughput with `callers` callers: the median of three runs.
func touchThroughput(_ store: SessionStore, _ ids: [String]) async throws -> Double {
    var runs: [Double] = []
    for _ in 0..<3 {
        runs.append(try await runLoad(concurrency: callers, total: operations) { task, _ in try await store.touch(ids[task]) }.opsPerSecond)
    }
    return runs.sorted()[1]
}

let standalone = try await RedisServer.start(.init(notifyKeyspaceEvents: "Kx"))
var clusterOptions = RedisCluster.Options()
clusterOptions.node = .init(notifyKeyspaceEvents: "Kx")
let cluster = try await RedisCluster.start(clusterOptions)
print(
    "bench-cluster: \(operations) touches per measurement, \(callers) callers; cluster \(cluster.url), standalone port \(standalone.port)")

// 1. Touch throughput, standalone then cluster (one at a time: they share the two cores).
let (standaloneClient, standaloneStore, standaloneIDs) = try await makeStore(standalone.configuration)
let standaloneTouch = try await touchThroughput(standaloneStore, standaloneIDs)
await standaloneClient.close()
await standalone.stop()
let metrics = CountingMetrics()
var clusterConfiguration = cluster.configuration
clusterConfiguration.metricsFactory = metrics
let (clusterClient, clusterStore, clusterIDs) = try await makeStore(clusterConfiguration)
let clusterTouch = try await touchThroughput(clusterStore, clusterIDs)
print(
    String(format: "touch: standalone %.0f/s, cluster %.0f/s (ratio %.2f)", standaloneTouch, clusterTouch, clusterTouch / standaloneTouch))

// 2. Slots migrate while the touches go on: every slot that holds one of the sessions' buckets
//    moves to another primary (keys first, ASK meanwhile; then MOVED once handed over).
let sessionSlots = Set(clusterIDs.map { HashSlot.of(clusterStore.keyspace.session($0)) }).sorted()
let redirectionsBefore = metrics.count("redis.redirections")
let migrationStart = ContinuousClock.now
let touching = Task {
    try await runLoad(concurrency: callers, total: operations * 2) { task, _ in try await clusterStore.touch(clusterIDs[task]) }
}
var moved = 0
for slot in sessionSlots.prefix(32) {
    let source = try await cluster.primary(forSlot: slot)
    guard let target = try await cluster.primaries().first(where: { $0 !== source }) else { continue }
    try await cluster.moveSlot(slot, to: target)
    moved += 1
}
let migrationSeconds = (ContinuousClock.now - migrationStart).seconds
let redirections = metrics.count("redis.redirections") - redirectionsBefore
let touchedDuringMigration = try await touching.value
print(
    String(
        format: "migration: %d slots moved in %.1f s under load, %d redirections (%.0f/s); touches meanwhile %.0f/s, p99 %.1f ms", moved,
        migrationSeconds, redirections, Double(redirections) / migrationSeconds, touchedDuringMigration.opsPerSecond,
        touchedDuringMigration.latencyMicroseconds(atPercentile: 99) / 1000))

// 3. A node joins and slots move to it while writers increment counters in them (a reshard
//    under load): every acknowledged increment must be there (lost), none may have run twice
//    (duplicates: more than acknowledged plus indeterminate), and the increments that failed as
//    "may have run" are counted (indeterminate; with some, a lost acknowledged increment could
//    hide behind one that ran, so lost is then a lower bound).
let joined = try await cluster.addPrimary()
var reshardKeys: [String] = []
var reshardSlots: Set<Int> = []
var candidate = 0
while reshardKeys.count < 64 {
    let key = "{reshard-\(candidate)}:counter"
    candidate += 1
    if reshardSlots.insert(HashSlot.of(key)).inserted { reshardKeys.append(key) }
}
let reshardAcknowledged = NIOLockedValueBox([Int](repeating: 0, count: reshardKeys.count))
let reshardMayHaveRun = NIOLockedValueBox([Int](repeating: 0, count: reshardKeys.count))
let reshardStop = NIOLockedValueBox(false)
let resharding = Task {
    await withTaskGroup(of: Void.self) { group in
        for (index, key) in reshardKeys.enumerated() {
            group.addTask {
                while !reshardStop.withLockedValue({ $0 }) {
                    do {
                        _ = try await clusterClient.send(RESPCommand("INCR", .string(key)))
                        reshardAcknowledged.withLockedValue { $0[index] += 1 }
                    } catch let error as HiredisError where error.commandMayHaveRun {
                        reshardMayHaveRun.withLockedValue { $0[index] += 1 }
                    } catch {
                        // Refused, never run: neither acknowledged nor indeterminate.
                    }
                }
            }
        }
    }
}
try await Task.sleep(for: .milliseconds(500))
var reshardMoved = 0
for key in reshardKeys {
    try await cluster.moveSlot(HashSlot.of(key), to: joined)
    reshardMoved += 1
}
try await Task.sleep(for: .milliseconds(500))
reshardStop.withLockedValue { $0 = true }
await resharding.value
var reshardLost = 0
var reshardDuplicates = 0
for (index, key) in reshardKeys.enumerated() {
    let value = try await clusterClient.send(RESPCommand("GET", .string(key))).int ?? 0
    let acknowledged = reshardAcknowledged.withLockedValue { $0[index] }
    reshardLost += max(0, acknowledged - value)
    reshardDuplicates += max(0, value - acknowledged - reshardMayHaveRun.withLockedValue { $0[index] })
}
let reshardIndeterminate = reshardMayHaveRun.withLockedValue { $0.reduce(0, +) }
print(
    "reshard: a node joined and \(reshardMoved) slots moved to it under 64 writers; "
        + "\(reshardAcknowledged.withLockedValue { $0.reduce(0, +) }) increments acknowledged, \(reshardLost) lost, "
        + "\(reshardDuplicates) duplicates, \(reshardIndeterminate) indeterminate")

// 4. A primary dies under writes: 50 writers INCR keys of one slot; its primary is killed and its
//    replica promoted by the cluster. Unavailable: from the kill until the first write issued
//    after it succeeded. Lost: acknowledged increments the promoted replica lacks.
let writers = 50
let keys = (0..<writers).map { "{failover}:counter-\($0)" }
let victim = try await cluster.primary(forSlot: HashSlot.of(keys[0]))
let acknowledged = NIOLockedValueBox([Int](repeating: 0, count: writers))
let stop = NIOLockedValueBox(false)
let killedAt = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
let firstSuccessAfterKill = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
let writing = Task {
    await withTaskGroup(of: Void.self) { group in
        for writer in 0..<writers {
            group.addTask {
                while !stop.withLockedValue({ $0 }) {
                    let issued = ContinuousClock.now
                    do {
                        _ = try await clusterClient.send(RESPCommand("INCR", .string(keys[writer])))
                        acknowledged.withLockedValue { $0[writer] += 1 }
                        if let killed = killedAt.withLockedValue({ $0 }), issued >= killed {
                            firstSuccessAfterKill.withLockedValue { $0 = $0 ?? ContinuousClock.now }
                        }
                    } catch {
                        // Indeterminate or refused: not counted as acknowledged.
                    }
                }
            }
        }
    }
}
try await Task.sleep(for: .seconds(2))
// The clock starts once the primary is dead (writes issued before that may still succeed).
let promoted = try await cluster.killPrimary(victim) { killedAt.withLockedValue { $0 = ContinuousClock.now } }
try await Task.sleep(for: .seconds(2))
stop.withLockedValue { $0 = true }
await writing.value
var lost = 0
for (writer, key) in keys.enumerated() {
    let value = try await cluster.send(RESPCommand("GET", .string(key)), to: promoted).int ?? 0
    lost += max(0, acknowledged.withLockedValue { $0[writer] } - value)
}
let unavailable =
    firstSuccessAfterKill.withLockedValue { $0 }.flatMap { first in killedAt.withLockedValue { $0 }.map { (first - $0).seconds * 1000 } }
    ?? -1
print(
    String(
        format: "failover: primary %@ killed, replica %@ promoted; writes unavailable for %.0f ms; %d acknowledged increments lost",
        victim.address.description, promoted.address.description, unavailable, lost))

await clusterClient.close()
await cluster.stop()

// 5. The touches again on a TLS cluster of the same shape (TLS on the bus and the replication
//    links too), against the plain cluster's figure.
let certificates = try await TLSCertificates.make()
var tlsOptions = RedisCluster.Options()
tlsOptions.node = .init(notifyKeyspaceEvents: "Kx")
tlsOptions.node.tls = certificates
let tlsCluster = try await RedisCluster.start(tlsOptions)
let (tlsClient, tlsStore, tlsIDs) = try await makeStore(tlsCluster.configuration)
let tlsTouch = try await touchThroughput(tlsStore, tlsIDs)
await tlsClient.close()
await tlsCluster.stop()
certificates.remove()
print(String(format: "TLS cluster: touch %.0f/s (ratio %.2f to the plain cluster)", tlsTouch, tlsTouch / clusterTouch))

printJSONLine([
    ("bench", "cluster-store"), ("primaries", 3), ("touch_ops_per_s", Int(clusterTouch)),
    ("standalone_touch_ops_per_s", Int(standaloneTouch)), ("touch_ratio_vs_standalone", rounded(clusterTouch / standaloneTouch)),
    ("migration_redirects_per_s", Int(Double(redirections) / migrationSeconds)), ("failover_lost_acknowledged", lost),
    ("failover_unavailable_ms", Int(unavailable)), ("reshard_slots_moved", reshardMoved), ("reshard_lost", reshardLost),
    ("reshard_duplicates", reshardDuplicates), ("reshard_indeterminate", reshardIndeterminate),
    ("tls_touch_ops_per_s", Int(tlsTouch)), ("tls_touch_ratio_vs_plain", rounded(tlsTouch / clusterTouch)),
])
