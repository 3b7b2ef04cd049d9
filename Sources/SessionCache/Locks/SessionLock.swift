import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Tracing

/// Per-session locks with leases and fencing, across app-server instances: two tabs of one user,
/// served by different instances, take turns on the session instead of overwriting each other.
///
/// ```swift
/// let locks = SessionLock(store: store)
/// try await locks.withLock(session.id) { lease in
///     let count = try await store.metadata(session.id)["count"]?.numberValue ?? 0
///     try await store.setMetadata(session.id, key: "count", value: .number(count + 1), lease: lease)
/// }
/// ```
///
/// - An uncontended acquire is one function call (`lock_take`: `SET <lock> <token> NX PX <lease>`
///   and the next fencing token, strictly greater than the session's last one, see
///   ``LockLease/fence``).
/// - Waiters queue in arrival order. A release hands the lock straight to the first waiter and
///   wakes it over the bucket's sharded pub/sub channel; the lock never looks free while others
///   wait, so nobody barges in. Waiters also ask again at least every
///   ``SessionLockConfiguration/waiterHeartbeat`` and when the holder's lease would run out, so a
///   lost wake-up costs little, and a waiter whose process died is skipped.
/// - The store's writes made with a lease (`lease:`) happen only while the lease is held
///   (``SessionError/staleLease`` otherwise), atomically with the write.
/// - Reads need no lock (``SessionStore/get(_:)``, ``SessionStore/metadata(_:)``).
///
/// A swift-service-lifecycle `Service`: ``run()`` keeps the wake-up subscription (put it in the
/// application's `ServiceGroup`). Without it locks still work; waiters then learn of releases by
/// asking again (``SessionLockConfiguration/waiterHeartbeat``), which is slower.
public final class SessionLock: Service {
    private struct Metrics: Sendable {
        let acquisitions: Counter
        let wait: CoreMetrics.Timer
        let renewals: Counter
        let leasesLost: Counter
    }

    /// The configuration the lock was made with.
    public let configuration: SessionLockConfiguration
    private let store: SessionStore
    private let metrics: Metrics
    /// Local waiters by token, woken by release messages.
    private let waiters = LockedState<[String: CheckedContinuation<Bool, Never>]>([:])
    private let wakeups: WakeupSubscription
    /// Locks to give back (see ``abandonLater(_:token:)``).
    private let cleanup = LockedState<[Abandoned]>([])
    private let cleanupWakeup = Wakeup()

    private struct Abandoned: Sendable {
        let lockKey: String
        let token: String
        let until: ContinuousClock.Instant
    }

    /// Locks for `store`'s sessions. Share one per process: it holds the wake-up subscription.
    public init(store: SessionStore, configuration: SessionLockConfiguration = SessionLockConfiguration()) {
        self.store = store
        self.configuration = configuration
        let factory = configuration.metricsFactory
        metrics = Metrics(
            acquisitions: Counter(label: "session.lock.acquisitions", factory: factory),
            wait: CoreMetrics.Timer(label: "session.lock.wait", factory: factory),
            renewals: Counter(label: "session.lock.renewals", factory: factory),
            leasesLost: Counter(label: "session.lock.leases_lost", factory: factory))
        wakeups = WakeupSubscription(configuration: store.redis.configuration, logger: configuration.logger)
    }

    /// Keeps the wake-up subscription, and gives back locks whose acquisition or release was
    /// interrupted (a timeout after Redis granted it, a cancelled task, Redis away), until
    /// graceful shutdown, cancellation or ``close()``.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.cleanupLoop() }
            await wakeups.run { [weak self] token in
                if let token { self?.wake(token) } else { self?.wakeAll() }
            }
            group.cancelAll()
        }
    }

    /// Stops the wake-up subscription (``run()`` returns). Waiters still waiting fall back to
    /// their heartbeat.
    public func close() async {
        await wakeups.close()
    }

    private var keyspace: SessionKeyspace { store.keyspace }
    private var staleWaiter: Duration { configuration.waiterHeartbeat * 3 }

    // MARK: Acquire, extend, release

    /// Acquires the session's lock (with ``SessionLockConfiguration/Policy/sessionPerTab``, the
    /// tab's), waiting at most `timeout` (default ``SessionLockConfiguration/waitTimeout``).
    /// Honours task cancellation; if the wait ends (timeout, cancellation, a lost reply) after
    /// Redis granted the lock, the lock is released again, so no ghost holds it for a lease.
    ///
    /// The lock does not check that the session is alive: the writes made under it do.
    ///
    /// - Throws: ``LockError/timedOut``, `CancellationError`, ``LockError/redis(_:)``, ``LockError/store(_:)``,
    ///   ``LockError/invalidTab``.
    public func acquire(_ id: String, tab: String? = nil, timeout: Duration? = nil) async throws -> LockLease {
        try await traced("acquire", id, tab: tab) { span in
            let lease = try await self.acquireUntraced(id, tab: tab, timeout: timeout)
            span?.attributes["session.lock.fence"] = lease.fence
            return lease
        }
    }

    private func acquireUntraced(_ id: String, tab: String?, timeout: Duration?) async throws -> LockLease {
        guard let bucket = keyspace.bucket(ofSession: id) else { throw LockError.notFound }
        let tab = configuration.policy == .sessionPerTab ? tab : nil
        do { try SessionStore.validate(tab: tab) } catch { throw LockError.invalidTab }
        let token = SessionID.make(bucket: 0)
        let lockKey = keyspace.lock(id, tab: tab)
        let started = ContinuousClock.now
        let deadline = started + (timeout ?? configuration.waitTimeout)
        func granted(_ fence: Int) -> LockLease {
            metrics.acquisitions.increment()
            metrics.wait.recordNanoseconds(Int64((ContinuousClock.now - started).nanoseconds))
            return LockLease(sessionID: id, tab: tab, token: token, fence: fence)
        }

        if configuration.policy == .activeTabWins {
            let result = try await guarded(lockKey, token: token) {
                try await self.store.redis.call(
                    self.acquireFunction(lockKey, token: token, mode: .takeover),
                    replicatedTo: self.store.configuration.replicaAcknowledgement)
            }
            guard case .granted(let fence) = result else { throw LockError.store(.corrupted("lock_acquire: a takeover was refused")) }
            return granted(fence)
        }

        // Uncontended: one call takes a free lock (with WAIT in the same round trip when replicas
        // must confirm; too few confirmations give the lock back and throw notReplicated).
        let take = LockTakeFunction(lockKey: lockKey, token: token, lease: configuration.lease)
        let acknowledgement = store.configuration.replicaAcknowledgement
        let fence = try await guarded(lockKey, token: token) { try await self.store.redis.call(take, replicatedTo: acknowledgement) }
        if let fence { return granted(fence) }

        // Contended: listen for wake-ups first, then queue up (a release in between wakes us).
        await wakeups.ensureSubscribed(keyspace.lockWakeups(bucket: bucket))
        do {
            while true {
                try Task.checkCancellation()
                let result = try await guarded(lockKey, token: token) {
                    try await self.store.redis.call(
                        self.acquireFunction(lockKey, token: token, mode: .wait),
                        replicatedTo: self.store.configuration.replicaAcknowledgement)
                }
                switch result {
                case .granted(let fence): return granted(fence)
                case .held(let left):
                    let now = ContinuousClock.now
                    if now >= deadline { throw LockError.timedOut }
                    let nap = min(.milliseconds(max(1, left)), configuration.waiterHeartbeat, deadline - now)
                    _ = await wait(token: token, atMost: nap)
                }
            }
        } catch {
            await abandon(lockKey, token: token)
            throw error
        }
    }

    /// Extends the lease by ``SessionLockConfiguration/lease``; false when it is no longer held.
    public func extend(_ lease: LockLease) async throws -> Bool {
        do {
            return try await store.redis.call(
                LockExtendFunction(lockKey: keyspace.lock(lease.sessionID, tab: lease.tab), token: lease.token, lease: configuration.lease))
        } catch {
            throw LockError.from(error)
        }
    }

    /// Releases the lock if `lease` still holds it, handing it to the next waiter. Returns false
    /// when it does not (a release by anyone but the holder changes nothing; safe to retry).
    @discardableResult
    public func release(_ lease: LockLease) async throws -> Bool {
        try await traced("release", lease.sessionID, tab: lease.tab) { span in
            span?.attributes["session.lock.fence"] = lease.fence
            do {
                return try await self.store.redis.call(
                    self.releaseFunction(self.keyspace.lock(lease.sessionID, tab: lease.tab), token: lease.token))
            } catch {
                throw LockError.from(error)
            }
        }
    }

    /// Runs `body` holding the session's lock and always releases it: on return, on throw, on
    /// cancellation. The lease is renewed every third of its length while `body` works; renewals
    /// that fail for a transient reason are retried until the lease would really end. If the lease
    /// is lost, `body` is cancelled and ``LockError/leaseLost`` is thrown (its writes under the
    /// lease were refused from the moment it was lost).
    public func withLock<T: Sendable>(
        _ id: String, tab: String? = nil, timeout: Duration? = nil, _ body: @escaping @Sendable (LockLease) async throws -> T
    ) async throws -> T {
        if configuration.tracer is NoOpTracer { return try await withLockUntraced(id, tab: tab, timeout: timeout, body) }
        return try await holdSpan(configuration.tracer, id, tab: tab) {
            try await self.withLockUntraced(id, tab: tab, timeout: timeout, body)
        }
    }

    private func holdSpan<Tracer: Tracing.Tracer, T: Sendable>(
        _ tracer: Tracer, _ id: String, tab: String?, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        try await tracer.withSpan("session.lock.hold", ofKind: .internal) { span in
            span.attributes["session.id_prefix"] = SessionID.redacted(id)
            if let tab, configuration.policy == .sessionPerTab { span.attributes["session.lock.tab"] = tab }
            return try await body()
        }
    }

    private func withLockUntraced<T: Sendable>(
        _ id: String, tab: String?, timeout: Duration?, _ body: @escaping @Sendable (LockLease) async throws -> T
    ) async throws -> T {
        let lease = try await acquire(id, tab: tab, timeout: timeout)
        let lost = NIOLockedValueBox(false)
        let result: Result<T, any Error>
        do {
            let value = try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await body(lease) }
                group.addTask {
                    await self.renew(lease, lost: lost)
                    return nil
                }
                // The first to finish decides: the body's value, or a lost lease (renewals never end otherwise).
                let first = try await group.next()!
                group.cancelAll()
                if let value = first { return value }
                throw LockError.leaseLost
            }
            result = .success(value)
        } catch {
            result = .failure(lost.withLockedValue { $0 } ? LockError.leaseLost : error)
        }
        // Release, also when this task is cancelled (the command is written all the same); if
        // the release fails, run() keeps trying while the lease lasts.
        do {
            _ = try await release(lease)
        } catch {
            abandonLater(keyspace.lock(lease.sessionID, tab: lease.tab), token: lease.token)
        }
        return try result.get()
    }

    private func renew(_ lease: LockLease, lost: NIOLockedValueBox<Bool>) async {
        let period = configuration.lease / 3
        var lastHeld = ContinuousClock.now
        var failing = false
        while !Task.isCancelled {
            try? await Task.sleep(for: failing ? period / 4 : period)
            if Task.isCancelled { return }
            do {
                if try await extend(lease) {
                    metrics.renewals.increment()
                    lastHeld = .now
                    failing = false
                    continue
                }
            } catch {
                // Redis is slow or away: keep trying while the lease may still be ours.
                failing = true
                if ContinuousClock.now - lastHeld < configuration.lease { continue }
            }
            metrics.leasesLost.increment()
            configuration.logger.warning("session lock lease lost", metadata: ["session": "\(SessionID.redacted(lease.sessionID))"])
            lost.withLockedValue { $0 = true }
            return
        }
    }

    /// Runs `body` in a client span `session.lock.<name>` (none when nobody records spans).
    private func traced<T: Sendable>(
        _ name: String, _ id: String, tab: String?, _ body: @Sendable (_ span: (any Span)?) async throws -> T
    ) async throws -> T {
        if configuration.tracer is NoOpTracer { return try await body(nil) }
        return try await traced(configuration.tracer, name, id, tab: tab, body)
    }

    private func traced<Tracer: Tracing.Tracer, T: Sendable>(
        _ tracer: Tracer, _ name: String, _ id: String, tab: String?, _ body: @Sendable (_ span: (any Span)?) async throws -> T
    ) async throws -> T {
        try await tracer.withSpan("session.lock.\(name)", ofKind: .client) { span in
            span.attributes["db.system.name"] = "redis"
            span.attributes["session.id_prefix"] = SessionID.redacted(id)
            if let tab, configuration.policy == .sessionPerTab { span.attributes["session.lock.tab"] = tab }
            return try await body(span)
        }
    }

    // MARK: Waiting

    private func acquireFunction(_ lockKey: String, token: String, mode: LockAcquireFunction.Mode) -> LockAcquireFunction {
        LockAcquireFunction(lockKey: lockKey, token: token, lease: configuration.lease, mode: mode, staleWaiter: staleWaiter)
    }

    private func releaseFunction(_ lockKey: String, token: String) -> LockReleaseFunction {
        LockReleaseFunction(lockKey: lockKey, token: token, staleWaiter: staleWaiter, handoverLease: staleWaiter)
    }

    /// Runs one acquire step; if it fails in a way that leaves open whether Redis granted the lock
    /// (timeout, lost connection, cancellation), gives the lock back before throwing.
    private func guarded<T: Sendable>(_ lockKey: String, token: String, _ step: () async throws -> T) async throws -> T {
        do {
            return try await step()
        } catch {
            await abandon(lockKey, token: token)
            if error is CancellationError { throw error }
            if case .notReplicated = error as? SessionError { throw LockError.notReplicated }
            throw LockError.from(error)
        }
    }

    /// Leaves the queue and gives the lock back if this token got it (owner-checked, so harmless
    /// when it did not). When that fails (Redis away, the task cancelled), ``run()`` keeps trying
    /// until the lease would have ended anyway.
    private func abandon(_ lockKey: String, token: String) async {
        do {
            try await abandonNow(lockKey, token: token)
        } catch {
            abandonLater(lockKey, token: token)
        }
    }

    private func abandonNow(_ lockKey: String, token: String) async throws {
        _ = try await store.redis.call(
            LockAbandonFunction(lockKey: lockKey, token: token, staleWaiter: staleWaiter, handoverLease: staleWaiter))
        _ = try await store.redis.call(releaseFunction(lockKey, token: token))
    }

    private func abandonLater(_ lockKey: String, token: String) {
        let until = ContinuousClock.now + configuration.lease + staleWaiter
        cleanup.withLock { $0.append(Abandoned(lockKey: lockKey, token: token, until: until)) }
        cleanupWakeup.signal()
    }

    /// Gives back locks whose acquisition or release was interrupted, until it works or the lease
    /// is over.
    private func cleanupLoop() async {
        while !Task.isCancelled {
            await cleanupWakeup.wait(atMost: .milliseconds(200))
            let items = cleanup.withLock { $0 }
            guard !items.isEmpty else { continue }
            var done: Set<String> = []
            for item in items {
                if ContinuousClock.now > item.until {
                    done.insert(item.token)
                } else if (try? await abandonNow(item.lockKey, token: item.token)) != nil {
                    done.insert(item.token)
                }
            }
            cleanup.withLock { $0.removeAll { done.contains($0.token) } }
        }
    }

    /// Waits until a release names `token`, or `atMost` passes, or the task is cancelled. True when woken.
    private func wait(token: String, atMost duration: Duration) async -> Bool {
        let woken = await waiting(atMost: duration) {
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                    self.waiters.withLock { $0[token] = continuation }
                    if Task.isCancelled { self.waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: false) }
                }
            } onCancel: {
                self.waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: false)
            }
        }
        return woken ?? false
    }

    private func wake(_ token: String) {
        waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: true)
    }

    /// Wakes every waiter: wake-ups may have been lost (the subscription reconnected).
    private func wakeAll() {
        let all = waiters.withLock { waiters in
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }
        for continuation in all { continuation.resume(returning: true) }
    }
}

/// The lock's wake-up subscription: one shard channel per bucket that has had waiters, made the
/// first time a caller waits there. Its connection lives in ``run()``.
final class WakeupSubscription: Sendable {
    private let subscriber: HiredisSubscriber
    private let logger: Logger
    private let channels = LockedState<Set<String>>([])

    init(configuration: HiredisConfiguration, logger: Logger) {
        self.subscriber = HiredisSubscriber(configuration: configuration)
        self.logger = logger
    }

    /// Keeps the subscription and hands every wake-up to `wake`: the token a release names, or
    /// nil after the subscription reconnected or overflowed (wake-ups may have been lost:
    /// everyone asks again).
    func run(wake: @escaping @Sendable (String?) -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.subscriber.run() }
            for await event in subscriber.events {
                switch event {
                case .message(_, _, let payload): wake(String(buffer: payload))
                case .resubscribed, .gap: wake(nil)
                }
            }
            group.cancelAll()
        }
    }

    /// Subscribes to `channel` unless subscribed already.
    func ensureSubscribed(_ channel: String) async {
        guard channels.withLock({ $0.insert(channel).inserted }) else { return }
        do {
            try await subscriber.subscribe(shardChannels: [channel])
        } catch {
            logger.warning("lock wake-ups unavailable; waiters poll", metadata: ["error": "\(error)"])
        }
    }

    func close() async {
        await subscriber.close()
    }
}

@_spi(Benchmarks)
extension SessionLock {
    // For scripts/bench-locks: the commands an uncontended acquire and a release send, to measure
    // the pipelined ceiling of exactly what the lock sends.

    /// The lock key of a session.
    public static func benchmarkLockKey(store: SessionStore, id: String) -> String { store.keyspace.lock(id) }

    /// The command of an uncontended acquire.
    public static func benchmarkAcquire(lockKey: String, token: String, lease: Duration = .seconds(5)) -> [RESPCommand] {
        [LockTakeFunction(lockKey: lockKey, token: token, lease: lease).command]
    }

    /// The command of a release.
    public static func benchmarkRelease(lockKey: String, token: String) -> RESPCommand {
        LockReleaseFunction(lockKey: lockKey, token: token, staleWaiter: .milliseconds(1500), handoverLease: .milliseconds(1500)).command
    }
}
