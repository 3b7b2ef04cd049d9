import Foundation
import HiredisNIO
import Histogram
import LoadVerdict

#if canImport(Glibc)
    import Glibc
#endif

/// The parameters of a run, shared by the coordinator and its workers.
struct LoadParameters: Codable, Sendable {
    var runID: String
    var redisURL: String
    var duration: Double
    var users: Int
    var tabs: Int
    var instances: Int
    var ttl: Double
    var seed: UInt64
    var thinkMilliseconds: Int
    /// Hidden: workers write the counter without the lock (a deliberately broken run).
    var unsafeNoLock: Bool
    /// The run's own Redis for what the workers saw (never faulted, so the record survives
    /// what the data Redis goes through).
    var bookkeepingURL: String
    /// The faults the coordinator injects (workers only need to know there are any).
    var faults = FaultPlan()
    /// The expiry listeners' claim lease: how long a killed worker's claims block their sessions.
    var claimLeaseSeconds: Double = 5
    /// Replicas every write waits for (the store's replicaAcknowledgement, scope everyWrite); 0: none.
    var replicaWait = 0
    /// Open loop: operations per second started on schedule over all workers, whether or not
    /// earlier ones finished (latency counts from the scheduled start); 0: closed loop (each tab
    /// waits for its previous operation).
    var rate: Double = 0
    /// Each worker's touch-cache capacity (the store's `touchCacheCapacity`); nil: the default.
    var touchCacheCapacity: Int?

    /// The store's namespace for this run.
    var namespace: String { "load-\(runID)" }
    /// The prefix of the run's own records in the bookkeeping Redis (every key: ``Bookkeeping``).
    var bookkeeping: String { "load:\(runID)" }
    /// After the load stops, workers keep listening until every session has ended and been
    /// finalized, at most this long (then the run is reported as hung): an idle timeout for the
    /// last sessions, two claim leases for hooks a killed worker held, and a margin for a Redis
    /// restart.
    var drainLimit: Double { ttl * 2 + claimLeaseSeconds * 2 + 20 }
    /// Bookkeeping keys expire after this (everything has a TTL).
    var bookkeepingTTLMilliseconds: Int { Int((duration + drainLimit + 600) * 1000) }
}

extension LoadParameters {
    /// The parameters as reports show them: the Redis URLs without credentials.
    var redacted: LoadParameters {
        var copy = self
        copy.redisURL = HiredisConfiguration.redacted(redisURL)
        copy.bookkeepingURL = HiredisConfiguration.redacted(bookkeepingURL)
        return copy
    }

    /// Writes the parameters for the workers into a new directory only this user can enter
    /// (`mkdtemp`, mode 0700) and returns the file: on the workers' command lines, readable by
    /// every user in `ps`, they would show the Redis password. The caller removes the directory.
    func writeForWorkers() throws -> URL {
        var template = Array((FileManager.default.temporaryDirectory.path + "/session-load-XXXXXX").utf8CString)
        guard let directory = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            throw CocoaError(.fileWriteUnknown)
        }
        let file = URL(fileURLWithPath: directory).appendingPathComponent("parameters.json")
        try JSONEncoder().encode(self).write(to: file)
        return file
    }
}

/// The operations a simulated tab performs.
enum LoadOperation: String, CaseIterable, Codable, Sendable {
    case create, resume, turn, metadata, heartbeat, list, rotate, delete, logoutAll = "logout_all"
}

/// What a worker measured, written as JSON for the coordinator.
struct WorkerResult: Codable, Sendable {
    var latencies: [String: Histogram<UInt64>] = [:]  // microseconds, per operation
    var lockWait = LoadHistogram.make()  // microseconds
    var expiryLateness = LoadHistogram.make()  // milliseconds
    var perSecond: [Int] = []  // operations completed in each second of the run
    var errors: [String: Int] = [:]
    /// Errors per second of the run, and those whose outcome is unknown (the write may have run).
    var errorsPerSecond: [Int] = []
    var indeterminatePerSecond: [Int] = []
    /// Counter increments acknowledged in each second (what a crash could lose at most).
    var incrementsPerSecond: [Int] = []
    /// Open loop: arrivals not started because too many operations were already in flight.
    var shed = 0
    var staleRejected = 0
    var hooks = 0
}

enum LoadHistogram {
    static func make() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// A small seeded generator, so that `--seed` reproduces a run's choices.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
