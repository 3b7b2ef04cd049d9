import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

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
/// Waiters are woken through pub/sub when the lock is released (the release names the next
/// waiter), ask again at least every ``SessionLockConfiguration/waiterHeartbeat`` and when the
/// holder's lease would run out (so a lost wake-up costs little), and are served in order of
/// arrival. Reads without the lock stay possible (``SessionStore/get(_:)``, ``SessionStore/metadata(_:)``).
public final class SessionLock: Sendable {
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
    private let waiters = Mutex<[String: CheckedContinuation<Bool, Never>]>([:])
    private let subscription = Mutex<Task<HiredisSubscriber?, Never>?>(nil)

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
    }

    /// Stops the wake-up subscription. Waiters still waiting fall back to their heartbeat.
    public func close() async {
        let task = subscription.withLock { task in
            defer { task = nil }
            return task
        }
        await task?.value?.close()
    }

    // MARK: Acquire, extend, release

    /// Acquires the session's lock, waiting at most `timeout` (default
    /// ``SessionLockConfiguration/waitTimeout``). Honours task cancellation.
    ///
    /// - Throws: ``LockError/notFound``, ``LockError/timedOut``, `CancellationError`,
    ///   ``LockError/redis(_:)``.
    public func acquire(_ id: String, tab: String? = nil, timeout: Duration? = nil) async throws -> LockLease {
        guard SessionID.isWellFormed(id) else { throw LockError.notFound }
        let tab = configuration.policy == .sessionPerTab ? tab : nil
        let token = SessionID.make()
        let started = ContinuousClock.now
        let deadline = started + (timeout ?? configuration.waitTimeout)
        let mode: RESPArgument = configuration.policy == .activeTabWins ? "takeover" : "wait"
        var subscribed = false
        while true {
            if Task.isCancelled {
                if subscribed { await abandon(id, tab: tab, token: token) }
                throw CancellationError()
            }
            let reply: RESPReply
            do {
                reply = try await store.redis.run(
                    SessionScripts.lockAcquire, keys: store.keys.lock(id, tab: tab),
                    arguments: [
                        .string(token), .integer(configuration.lease.wholeMilliseconds),
                        .integer(configuration.waiterHeartbeat.wholeMilliseconds * 3),
                        subscribed ? mode : (mode == "takeover" ? mode : "try"),
                    ])
            } catch {
                throw LockError.redis("\(error)")
            }
            guard case .array(let parts) = reply, let status = parts.first?.int else {
                throw LockError.redis("unexpected reply \(reply)")
            }
            if status == 1 {
                metrics.acquisitions.increment()
                metrics.wait.recordNanoseconds(Int64((ContinuousClock.now - started).nanoseconds))
                return LockLease(sessionID: id, tab: tab, token: token, fence: parts[1].int ?? 0)
            }
            if status == -1 { throw LockError.notFound }
            if !subscribed {
                // Contended: listen for releases first, then queue up (a release in between wakes us).
                await ensureSubscribed()
                subscribed = true
                continue
            }
            let holderLeft = Duration.milliseconds(max(1, parts.count > 1 ? parts[1].int ?? 1 : 1))
            let now = ContinuousClock.now
            if now >= deadline {
                await abandon(id, tab: tab, token: token)
                throw LockError.timedOut
            }
            let nap = min(holderLeft, configuration.waiterHeartbeat, deadline - now)
            let woken = await wait(token: token, atMost: nap)
            if !woken && Task.isCancelled {
                await abandon(id, tab: tab, token: token)
                throw CancellationError()
            }
        }
    }

    /// Extends the lease by ``SessionLockConfiguration/lease``; false when it is no longer held.
    public func extend(_ lease: LockLease) async throws -> Bool {
        let reply = try await store.redis.run(
            SessionScripts.lockExtend, keys: store.keys.lock(lease.sessionID, tab: lease.tab),
            arguments: [.string(lease.token), .integer(configuration.lease.wholeMilliseconds)])
        return reply.int == 1
    }

    /// Releases the lock if `lease` still holds it and wakes the next waiter. Returns false when it
    /// does not (a release by anyone but the owner changes nothing; safe to retry).
    @discardableResult
    public func release(_ lease: LockLease) async throws -> Bool {
        let reply = try await store.redis.run(
            SessionScripts.lockRelease, keys: store.keys.lock(lease.sessionID, tab: lease.tab),
            arguments: [.string(lease.token), .string(store.keys.lockChannel(lease.sessionID, tab: lease.tab))])
        return reply.int == 1
    }

    /// Runs `body` holding the session's lock and always releases it: on return, on throw, on
    /// cancellation. The lease is renewed every third of its length while `body` works; if a renewal
    /// fails, `body` is cancelled and ``LockError/leaseLost`` is thrown (its fenced writes were
    /// refused from the moment the lease was lost).
    public func withLock<T: Sendable>(
        _ id: String, tab: String? = nil, timeout: Duration? = nil, _ body: @escaping @Sendable (LockLease) async throws -> T
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
        // Release even when this task is cancelled: in a task of its own.
        _ = await Task { try? await self.release(lease) }.value
        return try result.get()
    }

    private func renew(_ lease: LockLease, lost: NIOLockedValueBox<Bool>) async {
        let period = configuration.lease / 3
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            if Task.isCancelled { return }
            if (try? await extend(lease)) == true {
                metrics.renewals.increment()
            } else {
                metrics.leasesLost.increment()
                configuration.logger.warning(
                    "session lock lease lost", metadata: ["session": "\(StoreInstrumentation.redacted(lease.sessionID))"])
                lost.withLockedValue { $0 = true }
                return
            }
        }
    }

    // MARK: Waiting

    private func abandon(_ id: String, tab: String?, token: String) async {
        _ = await Task {
            try? await store.redis.run(
                SessionScripts.lockAbandon, keys: store.keys.lock(id, tab: tab),
                arguments: [.string(token), .string(store.keys.lockChannel(id, tab: tab))])
        }.value
    }

    /// Waits until a release names `token`, or `atMost` passes, or the task is cancelled. True when woken.
    private func wait(token: String, atMost duration: Duration) async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                waiters.withLock { $0[token] = continuation }
                Task {
                    try? await Task.sleep(for: duration)
                    self.waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: false)
                }
            }
        } onCancel: {
            self.waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: false)
        }
    }

    private func wake(_ token: String) {
        waiters.withLock { $0.removeValue(forKey: token) }?.resume(returning: true)
    }

    /// One pattern subscription per lock object, made the first time a caller has to wait.
    private func ensureSubscribed() async {
        let task = subscription.withLock { task -> Task<HiredisSubscriber?, Never> in
            if let task { return task }
            let made = Task { () -> HiredisSubscriber? in
                let subscriber = HiredisSubscriber(configuration: store.redis.configuration)
                do {
                    try await subscriber.subscribe(patterns: [store.keys.lockChannelPattern])
                } catch {
                    configuration.logger.warning("lock wake-ups unavailable; waiters poll", metadata: ["error": "\(error)"])
                }
                Task {
                    for await event in subscriber.events {
                        switch event {
                        case .message(_, _, let payload): self.wake(String(buffer: payload))
                        case .resubscribed:
                            // Wake-ups may have been lost: everyone asks again.
                            let all = self.waiters.withLock { waiters in
                                defer { waiters.removeAll() }
                                return Array(waiters.values)
                            }
                            for continuation in all { continuation.resume(returning: true) }
                        }
                    }
                }
                return subscriber
            }
            task = made
            return made
        }
        _ = await task.value
    }
}

extension SessionLock {
    // For scripts/bench-locks: the raw commands of an acquire and a release, to measure the
    // pipelined ceiling of the very scripts the lock runs.

    /// The lock keys of a session.
    public static func benchmarkKeys(store: SessionStore, id: String) -> [RESPArgument] { store.keys.lock(id, tab: nil) }

    /// `EVALSHA` of the acquire script (loaded by a first acquire).
    public static func benchmarkAcquire(keys: [RESPArgument], token: String) -> RESPCommand {
        RESPCommand(
            "EVALSHA",
            arguments: [.string(SessionScripts.lockAcquire.sha1), .integer(keys.count)] + keys + [.string(token), 5000, 1500, "wait"])
    }

    /// `EVALSHA` of the release script.
    public static func benchmarkRelease(keys: [RESPArgument], token: String, store: SessionStore, id: String) -> RESPCommand {
        RESPCommand(
            "EVALSHA",
            arguments: [.string(SessionScripts.lockRelease.sha1), .integer(keys.count)] + keys
                + [.string(token), .string(store.keys.lockChannel(id, tab: nil))])
    }
}
