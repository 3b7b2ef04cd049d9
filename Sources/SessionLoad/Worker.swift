@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import LoadVerdict
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SessionCache

/// One app-server instance: its own connections, store, locks and expiry listener. It simulates the
/// tabs assigned to it (tab `t` of user `u` runs on instance `(u * tabs + t) % instances`), so one
/// user's tabs are spread over instances that coordinate only through Redis.
final class Worker: Sendable {
    let parameters: LoadParameters
    let index: Int
    let client: HiredisClient
    let store: SessionStore
    let locks: SessionLock
    /// The run's records (outcomes, hook runs) in the bookkeeping Redis, apart from the data Redis under test.
    let books: Bookkeeping
    private let result = NIOLockedValueBox(WorkerResult())
    private let start = ContinuousClock.now
    /// Long-run samples (heap, per-minute p99) when `SESSION_LOAD_SAMPLES` names a directory.
    private let samples: Samples?

    init(parameters: LoadParameters, index: Int) throws {
        self.parameters = parameters
        self.index = index
        samples = Samples(worker: index)
        var redis = try HiredisConfiguration(url: parameters.redisURL)
        redis.clientName = "session-load-\(index)"
        client = try HiredisClient.started(configuration: redis)
        var bookkeeping = try HiredisConfiguration(url: parameters.bookkeepingURL)
        bookkeeping.clientName = "session-load-books-\(index)"
        books = Bookkeeping(client: try HiredisClient.started(configuration: bookkeeping), parameters: parameters)
        var configuration = SessionStoreConfiguration(namespace: parameters.namespace)
        configuration.expiryListener = true
        if let capacity = parameters.touchCacheCapacity { configuration.touchCacheCapacity = capacity }
        if parameters.replicaWait > 0 {
            configuration.replicaAcknowledgement = .init(replicas: parameters.replicaWait, timeout: .seconds(1), scope: .everyWrite)
        }
        store = try SessionStore(client: client, configuration: configuration)
        var lockConfiguration = SessionLockConfiguration()
        lockConfiguration.waitTimeout = .seconds(30)
        locks = SessionLock(store: store, configuration: lockConfiguration)
        Task { [locks] in try? await locks.run() }
    }

    /// Runs the load, then keeps the listener running while the last sessions expire; returns what it measured.
    func run() async throws -> WorkerResult {
        var listenerConfiguration = ExpiryListenerConfiguration()
        listenerConfiguration.claimLease = .milliseconds(Int(parameters.claimLeaseSeconds * 1000))
        let listener = ExpiryListener(store: store, configuration: listenerConfiguration) { [self] expired in
            try await self.hookRan(expired)
        }
        let group = ServiceGroup(services: [listener], logger: Logger(label: "session-load"))
        let listening = Task { try await group.run() }

        let loadEnd = start + .milliseconds(Int(parameters.duration * 1000))
        // Progress for the coordinator: this worker's totals, every second.
        let progress = Task {
            var tick = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                tick += 1
                let (operations, errors) = result.withLockedValue { ($0.perSecond.reduce(0, +), $0.errors.values.reduce(0, +)) }
                var active: Int?
                // One worker samples the store's figures (a call per bucket) every few seconds.
                if index == 0, tick % 5 == 1, let stats = try? await store.stats(), !Task.isCancelled {
                    active = stats.activeSessions
                }
                try? await books.recordProgress(worker: index, operations: operations, errors: errors, activeSessions: active)
            }
        }
        defer { progress.cancel() }
        let sampling = Task { [samples] in await samples?.run() }
        defer { sampling.cancel() }
        if parameters.rate > 0 {
            await openLoop(until: loadEnd)
        } else {
            await withTaskGroup(of: Void.self) { tasks in
                for user in 0..<parameters.users {
                    for tab in 0..<parameters.tabs where (user * parameters.tabs + tab) % parameters.instances == index {
                        tasks.addTask { await self.simulate(user: user, tab: tab, until: loadEnd) }
                    }
                }
            }
        }
        // Drain: hooks go on until the coordinator has seen every session finalized (or gave up).
        let drainEnd = ContinuousClock.now + .milliseconds(Int((parameters.drainLimit + 30) * 1000))
        while ContinuousClock.now < drainEnd {
            if (try? await books.stopRequested()) == true { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        await group.triggerGracefulShutdown()
        _ = await listening.result
        await locks.close()
        await client.close()
        await books.close()
        return result.withLockedValue { $0 }
    }

    // MARK: A tab

    private func simulate(user: Int, tab: Int, until end: ContinuousClock.Instant) async {
        var random = SplitMix64(seed: parameters.seed ^ UInt64(user &* 7919 &+ tab &* 104_729 &+ 1))
        let name = "user-\(user)"
        while ContinuousClock.now < end {
            // Some users go idle for longer than the TTL now and then (all their tabs at once, on
            // every instance: the schedule depends on the user and the clock only), so their
            // sessions expire during the run.
            if isIdle(user: user) {
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            let operation = pick(&random)
            let began = ContinuousClock.now
            do {
                try await perform(operation, user: name, random: &random)
                record(operation, since: began)
            } catch {
                recordError(operation, error)
            }
            if parameters.thinkMilliseconds > 0 {
                try? await Task.sleep(for: .milliseconds(Int.random(in: 0...parameters.thinkMilliseconds, using: &random)))
            }
        }
    }

    /// Open loop: this worker's share of `rate` operations per second, each started at its
    /// scheduled time on a tab of its own users, whether or not earlier ones finished. Latency is
    /// measured from the scheduled start (free of coordinated omission). At most 5,000 in flight:
    /// beyond, arrivals are shed and counted.
    private func openLoop(until end: ContinuousClock.Instant) async {
        let tabs = (0..<parameters.users).flatMap { user in
            (0..<parameters.tabs).filter { (user * parameters.tabs + $0) % parameters.instances == index }.map { (user, $0) }
        }
        guard !tabs.isEmpty else { return }
        let interval = Duration.nanoseconds(Int64(1e9 * Double(parameters.instances) / parameters.rate))
        let inFlight = NIOLockedValueBox(0)
        var random = SplitMix64(seed: parameters.seed ^ UInt64(index &* 7_654_321 &+ 17))
        await withDiscardingTaskGroup { group in
            var scheduled = start
            while scheduled < end {
                try? await Task.sleep(until: scheduled)
                let (user, _) = tabs[Int.random(in: 0..<tabs.count, using: &random)]
                let operation = pick(&random)
                let seed = random.next()
                let at = scheduled
                scheduled += interval
                if isIdle(user: user) { continue }
                let admitted = inFlight.withLockedValue { count in
                    guard count < 5_000 else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    result.withLockedValue { $0.shed += 1 }
                    continue
                }
                group.addTask {
                    var random = SplitMix64(seed: seed)
                    do {
                        try await self.perform(operation, user: "user-\(user)", random: &random)
                        self.record(operation, since: at)
                    } catch {
                        self.recordError(operation, error)
                    }
                    inFlight.withLockedValue { $0 -= 1 }
                }
            }
        }
    }

    private func isIdle(user: Int) -> Bool {
        // A quarter of the users: idle for 1.5 TTL in every 6 TTL, at a phase of their own.
        guard user % 4 == 1 else { return false }
        let cycle = parameters.ttl * 6
        let phase = (Date().timeIntervalSince1970 + Double(user) * 1.37).truncatingRemainder(dividingBy: cycle)
        return phase < parameters.ttl * 1.5
    }

    private func pick(_ random: inout SplitMix64) -> LoadOperation {
        let roll = Int.random(in: 0..<1000, using: &random)
        switch roll {
        case 0..<400: return .turn
        case 400..<550: return .resume
        case 550..<680: return .metadata
        case 680..<860: return .heartbeat
        case 860..<980: return .list
        case 980..<990: return .rotate
        case 990..<997: return .delete
        default: return .logoutAll
        }
    }

    private func perform(_ operation: LoadOperation, user: String, random: inout SplitMix64) async throws {
        let id = try await currentSession(user: user)
        switch operation {
        case .create:
            break
        case .resume:
            if case .notFound = try await store.resume(id, user: user) { try await forget(id, user: user) }
        case .turn:
            try await turn(id, user: user, random: &random)
        case .metadata:
            try await store.setMetadata(id, ["locale": .string(["en", "fr", "de"][Int.random(in: 0..<3, using: &random)])])
        case .heartbeat:
            try await store.touch(id, activity: .heartbeat)
        case .list:
            _ = try await store.list(user: user)
        case .rotate:
            try await withLockTimed(id) { lease in
                // The old id is uncertain from before the call until its outcome is on the books in
                // one atomic step: a worker killed in between (or a lost reply) leaves an id the
                // checker cannot judge, never one that looks ended without a hook.
                let marked = try await self.books.markUncertain(id)
                let rotated: Session
                do {
                    rotated = try await self.store.rotate(id)
                } catch {
                    // Rotated or not, nobody knows: the old id stays uncertain. Certainly not
                    // rotated: it is judged again, unless an earlier rotation left it uncertain.
                    if !Self.isIndeterminate(error), marked { try? await self.books.clearUncertain(id) }
                    throw error
                }
                try await self.books.recordRotation(of: id, to: rotated.id, user: user)
                _ = lease
            }
        case .delete:
            try await withLockTimed(id) { _ in
                try await self.store.delete(id)
                try await self.forget(id, user: user)
            }
        case .logoutAll:
            try await withLockTimed(id) { _ in
                _ = try await self.store.deleteAll(user: user)
                try await self.forget(id, user: user)
            }
        }
    }

    /// A user/assistant turn and a read-modify-write of the session's counter, under the lock
    /// (or, in the deliberately broken run, without it).
    private func turn(_ id: String, user: String, random: inout SplitMix64) async throws {
        let words = Int.random(in: 3...30, using: &random)
        if parameters.unsafeNoLock {
            let value = try await store.metadata(id)["turns"]?.numberValue ?? 0
            try await Task.sleep(for: .microseconds(200))  // the window in which another tab's write is lost
            try await increment(id) { try await self.store.setMetadata(id, key: "turns", value: .number(value + 1)) }
            return
        }
        try await withLockTimed(id) { lease in
            try await self.store.appendTurn(
                id, user: "question of \(words) words", assistant: String(repeating: "answer ", count: words), lease: lease)
            let value = try await self.store.metadata(id)["turns"]?.numberValue ?? 0
            try await self.increment(id) {
                try await self.store.setMetadata(id, key: "turns", value: .number(value + 1), lease: lease)
            }
        }
    }

    /// Runs the write that increments `id`'s counter, recording its outcome Jepsen style: pending
    /// before it is sent; ok when acknowledged; nothing when it certainly did not run; pending
    /// stays (indeterminate) when the reply was lost, or the worker dies meanwhile.
    private func increment(_ id: String, _ write: @Sendable () async throws -> Void) async throws {
        try await books.recordPending(id)
        do {
            try await write()
        } catch {
            if !Self.isIndeterminate(error) { try? await books.dropPending(id) }
            throw error
        }
        let second = Int((ContinuousClock.now - start).components.seconds)
        result.withLockedValue { result in
            while result.incrementsPerSecond.count <= second { result.incrementsPerSecond.append(0) }
            result.incrementsPerSecond[second] += 1
        }
        try await books.recordAck(id)
    }

    /// Whether a failed operation may nevertheless have been applied (its reply was lost).
    static func isIndeterminate(_ error: any Error) -> Bool {
        if let error = error as? HiredisError { return error.commandMayHaveRun }
        switch error as? SessionError {
        case .redis(let error): return error.commandMayHaveRun
        // A reply the store could not read says nothing about whether the write happened; a write
        // too few replicas confirmed happened on a primary that a failover may lose.
        case .corrupted, .notReplicated: return true
        default: return false
        }
    }

    private func withLockTimed(_ id: String, _ body: @escaping @Sendable (LockLease) async throws -> Void) async throws {
        let asked = ContinuousClock.now
        let lease = try await locks.acquire(id)
        let waited = ContinuousClock.now - asked
        result.withLockedValue {
            _ = $0.lockWait.record(
                UInt64(max(0, waited.components.seconds * 1_000_000 + waited.components.attoseconds / 1_000_000_000_000)))
        }
        do {
            try await body(lease)
        } catch {
            _ = try? await locks.release(lease)
            throw error
        }
        _ = try? await locks.release(lease)
    }

    /// The user's session, shared by all their tabs through a "cookie" in Redis; a fresh one when
    /// there is none or it ended.
    private func currentSession(user: String) async throws -> String {
        if let id = try await books.cookie(user: user), !id.isEmpty { return id }
        let began = ContinuousClock.now
        let session = try await store.create(user: user, metadata: ["turns": 0], mode: .custom(.milliseconds(Int(parameters.ttl * 1000))))
        let current = try await books.recordCreated(session.id, user: user)
        record(.create, since: began)
        return current
    }

    /// Drops the cookie if it still names `id` (the session ended).
    private func forget(_ id: String, user: String) async throws {
        try await books.dropCookie(user: user, ifNaming: id)
    }

    // MARK: Measurements

    private func record(_ operation: LoadOperation, since began: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - began
        let micros = UInt64(max(0, elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000))
        let second = Int((ContinuousClock.now - start).components.seconds)
        samples?.record(microseconds: micros)
        result.withLockedValue { result in
            _ = result.latencies[operation.rawValue, default: LoadHistogram.make()].record(micros)
            while result.perSecond.count <= second { result.perSecond.append(0) }
            result.perSecond[second] += 1
        }
    }

    private func recordError(_ operation: LoadOperation, _ error: any Error) {
        if let error = error as? SessionError, error == .notFound || error == .staleLease {
            // Expected under this load: a session ended (expired, rotated, deleted) under a tab's feet.
            if error == .staleLease { result.withLockedValue { $0.staleRejected += 1 } }
            return
        }
        if let error = error as? LockError, error == .notFound { return }
        let second = Int((ContinuousClock.now - start).components.seconds)
        let indeterminate = Self.isIndeterminate(error)
        result.withLockedValue { result in
            result.errors["\(operation.rawValue): \(error)", default: 0] += 1
            while result.errorsPerSecond.count <= second { result.errorsPerSecond.append(0) }
            while result.indeterminatePerSecond.count <= second { result.indeterminatePerSecond.append(0) }
            result.errorsPerSecond[second] += 1
            if indeterminate { result.indeterminatePerSecond[second] += 1 }
        }
    }

    private func hookRan(_ expired: ExpiredSession) async throws {
        let id = expired.session.id
        let turns = Int(expired.session.metadata["turns"]?.numberValue ?? 0)
        let lateness = max(0, Date().timeIntervalSince(expired.expiredAt) * 1000)
        result.withLockedValue { result in
            result.hooks += 1
            if expired.reason != .deleted { _ = result.expiryLateness.record(UInt64(lateness)) }
        }
        // One entry per run, written before the hook returns: a worker killed right after still
        // counts as having run it. A hook that cannot write it fails (and is tried again), as a
        // real cleanup hook must when it could not do its work.
        try await books.recordHookRun(SessionHistory.HookRun(worker: index, attempt: expired.attempt, counter: turns), session: id)
    }
}
