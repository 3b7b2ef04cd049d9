import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import Synchronization

/// Runs the application's cleanup hook once for every session that ends (idle timeout, absolute
/// lifetime, or deletion with ``SessionStoreConfiguration/cleanupHooks``), across all instances.
///
/// Every app instance runs one, as a swift-service-lifecycle `Service`. Two sources find ended
/// sessions: expired-key events for the store's timers (prompt when Redis delivers them; Redis
/// sends them only when it actually deletes a key, and drops them while nobody listens), and a
/// sweep of the deadline index every ``ExpiryListenerConfiguration/sweepInterval``, oldest first in
/// bounded batches (which also makes Redis expire due timers). Every candidate is checked against
/// the session itself; one instance claims it atomically and runs the hook with the session's data
/// as it was; then the session's keys and index entries are removed. If the claiming instance dies
/// in the middle of the hook, another runs it again after ``ExpiryListenerConfiguration/claimLease``
/// (at-least-once in that case; ``ExpiredSession/attempt`` tells).
///
/// ```swift
/// let listener = ExpiryListener(store: store) { expired in
///     try await sandboxes.release(for: expired.session.id)
/// }
/// let group = ServiceGroup(services: [listener], logger: logger)
/// try await group.run()
/// ```
public final class ExpiryListener: Service {
    /// The cleanup hook. A hook that throws is logged and tried again, at most
    /// ``ExpiryListenerConfiguration/maxHookAttempts`` times in all.
    public typealias Hook = @Sendable (ExpiredSession) async throws -> Void
    /// The warning hook (see ``SessionStoreConfiguration/expiryWarningLead``).
    public typealias WarningHook = @Sendable (ExpiryWarning) async throws -> Void

    private let store: SessionStore
    private let configuration: ExpiryListenerConfiguration
    private let onExpiry: Hook
    private let onWarning: WarningHook?
    private let metrics: ExpiryMetrics
    private let inFlight = Mutex<Set<String>>([])
    /// Session ids named by expired-key events since the last sweep.
    private let eventIDs = Mutex<[String]>([])
    /// Identifies this instance's claims.
    private let instanceToken = SessionID.make()

    /// A listener for `store`'s namespace.
    public init(
        store: SessionStore, configuration: ExpiryListenerConfiguration = ExpiryListenerConfiguration(),
        onWarning: WarningHook? = nil, onExpiry: @escaping Hook
    ) {
        self.store = store
        self.configuration = configuration
        self.onExpiry = onExpiry
        self.onWarning = onWarning
        self.metrics = ExpiryMetrics(factory: configuration.metricsFactory)
    }

    private var keys: SessionKeys { store.keys }
    private var logger: Logger { configuration.logger }

    /// Listens and sweeps until the task is cancelled or a graceful shutdown is requested; then
    /// stops taking new sessions and lets running hooks finish.
    public func run() async throws {
        let stopping = NIOLockedValueBox(false)
        let subscriber = HiredisSubscriber(configuration: store.redis.configuration)
        let database = store.redis.configuration.database
        switch await enableNotifications() {
        case .keyspace:
            // Only this namespace's keys: other applications' expirations never reach us.
            try? await subscriber.subscribe(patterns: ["__keyspace@\(database)__:\(keys.namespace):session:*"])
        case .keyevent:
            try? await subscriber.subscribe(channels: ["__keyevent@\(database)__:expired"])
        case .none:
            break
        }

        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.collectEvents(from: subscriber) }
                await self.sweepLoop(isStopping: { stopping.withLockedValue { $0 } })
                await subscriber.close()
            }
        } onGracefulShutdown: {
            stopping.withLockedValue { $0 = true }
        }
    }

    // MARK: Sources

    /// Expired-key events only collect session ids here; each sweep checks them in one batch.
    private func collectEvents(from subscriber: HiredisSubscriber) async {
        for await event in subscriber.events {
            switch event {
            case .message(let channel, let pattern, let payload):
                // Keyspace: the channel names the key, the payload the event. Keyevent: the payload is the key.
                let key: String
                if pattern != nil {
                    guard String(buffer: payload) == "expired", let colon = channel.firstIndex(of: ":") else { continue }
                    key = String(channel[channel.index(after: colon)...])
                } else {
                    key = String(buffer: payload)
                }
                if key.hasSuffix(":alive"), let id = keys.sessionID(fromKey: key) { eventIDs.withLock { $0.append(id) } }
            case .resubscribed:
                logger.info("expired-key events were missed while reconnecting; the sweep covers them")
            }
        }
    }

    /// Processes the sessions named by events since the last sweep. Every instance receives every
    /// event; one ZMSCORE per thousand tells which are due and not yet taken by a sweeper: only
    /// those are checked (most events arrive after the sweep has handled their session).
    private func processEvents() async throws {
        let ids = Array(
            Set(
                eventIDs.withLock { ids in
                    defer { ids.removeAll(keepingCapacity: true) }
                    return ids
                }))
        guard !ids.isEmpty else { return }
        for start in stride(from: 0, to: ids.count, by: 1000) {
            let chunk = Array(ids[start..<min(start + 1000, ids.count)])
            let scores =
                try await store.redis.send(
                    RESPCommand("ZMSCORE", arguments: [.string(keys.deadlines)] + chunk.map { .string($0) })
                ).array ?? []
            let now = Double(SessionStore.nowMilliseconds())
            var due: [String] = []
            for (index, id) in chunk.enumerated() where index < scores.count {
                // No hint: finalized already (hints are written in the same round trip as the
                // session). A hint ahead of now: a sweeper holds it, or the session lives on.
                guard let score = scores[index].double, score <= now else { continue }
                due.append(id)
            }
            await processAll(due)
        }
    }

    /// Processes sessions concurrently (at most ``ExpiryListenerConfiguration/maxConcurrentHooks``),
    /// skipping those already in flight here.
    private func processAll(_ ids: [String]) async {
        let limiter = Limiter(configuration.maxConcurrentHooks)
        await withDiscardingTaskGroup { group in
            for id in ids where begin(id) {
                await limiter.acquire()
                group.addTask {
                    await self.process(id)
                    self.end(id)
                    limiter.release()
                }
            }
        }
    }

    private func sweepLoop(isStopping: @Sendable () -> Bool) async {
        while !Task.isCancelled && !isStopping() {
            var taken = 0
            do {
                taken = try await sweepOnce()
                try await processEvents()
            } catch {
                logger.warning("expiry sweep failed", metadata: ["error": "\(error)"])
            }
            // A full batch means a backlog: take the next one at once, oldest first.
            if taken < configuration.sweepBatchSize {
                try? await Task.sleep(for: configuration.sweepInterval)
            } else {
                await Task.yield()
            }
        }
    }

    /// One sweep: takes the due entries of the deadline and warning indexes (oldest first, at most
    /// a batch of each) and processes them before it returns. Returns how many were due.
    @discardableResult
    func sweepOnce() async throws -> Int {
        let now = SessionStore.nowMilliseconds()
        let arguments: [RESPArgument] = [.integer(now), .integer(configuration.sweepBatchSize), .integer(hintLease)]
        async let deadlines = store.redis.run(SessionScripts.takeDue, keys: [.string(keys.deadlines)], arguments: arguments)
        async let warnings = store.redis.run(SessionScripts.takeDue, keys: [.string(keys.warnings)], arguments: arguments)
        let dueDeadlines = try await deadlines.array?.compactMap(\.string) ?? []
        let dueWarnings = try await warnings.array?.compactMap(\.string) ?? []
        let due = Array(Set(dueDeadlines + dueWarnings))
        metrics.sweepBatch.record(due.count)
        await processAll(due)
        return max(dueDeadlines.count, dueWarnings.count)
    }

    /// How long a swept entry stays with the sweeper that took it before others may take it.
    private var hintLease: Int { max(2000, configuration.sweepInterval.wholeMilliseconds * 20) }

    private func begin(_ id: String) -> Bool { inFlight.withLock { $0.insert(id).inserted } }
    private func end(_ id: String) { _ = inFlight.withLock { $0.remove(id) } }

    // MARK: One session

    private func process(_ id: String) async {
        guard SessionID.isWellFormed(id) else {
            _ = try? await store.redis.pipeline([
                RESPCommand("ZREM", .string(keys.deadlines), .string(id)), RESPCommand("ZREM", .string(keys.warnings), .string(id)),
            ])
            return
        }
        do {
            let lead = store.configuration.expiryWarningLead?.wholeMilliseconds ?? 0
            let reply = try await store.redis.run(
                SessionScripts.check, keys: keys.sessionAndClaim(id),
                arguments: [
                    .integer(SessionStore.nowMilliseconds()), .string(instanceToken), .integer(configuration.claimLease.wholeMilliseconds),
                    .integer(onWarning == nil ? 0 : lead), .integer(store.grace),
                ])
            guard case .array(let parts) = reply, let verdict = parts.first?.string else { return }
            let now = SessionStore.nowMilliseconds()
            switch verdict {
            case "alive":
                let ttl = parts[1].int ?? 0
                var commands = [RESPCommand("ZADD", .string(keys.deadlines), "XX", .integer(now + ttl), .string(id))]
                if onWarning != nil, lead > 0 {
                    if ttl > lead && parts[2].int == 0 {
                        commands.append(RESPCommand("ZADD", .string(keys.warnings), .integer(now + ttl - lead), .string(id)))
                        commands.append(RESPCommand("PEXPIRE", .string(keys.warnings), .integer(store.indexLifetime)))
                    } else {
                        commands.append(RESPCommand("ZREM", .string(keys.warnings), .string(id)))
                    }
                }
                _ = try await store.redis.pipeline(commands)
            case "warn":
                let ttl = parts[1].int ?? 0
                _ = try await store.redis.pipeline([
                    RESPCommand("ZREM", .string(keys.warnings), .string(id)),
                    RESPCommand("ZADD", .string(keys.deadlines), "XX", .integer(now + ttl), .string(id)),
                ])
                if let onWarning, let fields = parts[2].array {
                    let session = try store.decodeSession(id: id, fields: fields)
                    do {
                        try await onWarning(ExpiryWarning(session: session, remaining: .milliseconds(ttl)))
                    } catch {
                        logger.error(
                            "expiry warning hook failed",
                            metadata: ["session": "\(StoreInstrumentation.redacted(id))", "error": "\(error)"])
                    }
                }
            case "gone":
                _ = try await store.redis.pipeline([
                    RESPCommand("ZREM", .string(keys.deadlines), .string(id)), RESPCommand("ZREM", .string(keys.warnings), .string(id)),
                ])
            case "busy":
                metrics.claimsLost.increment()
                let ttl = max(parts.count > 1 ? parts[1].int ?? 0 : 0, 1)
                _ = try await store.redis.send(RESPCommand("ZADD", .string(keys.deadlines), "XX", .integer(now + ttl), .string(id)))
            case "claimed":
                // If this instance dies during the hook, the hint comes back after the sweep's short
                // lease; the sweeper that takes it finds the claim held ('busy') and reschedules the
                // hint to the claim's end, when another instance claims the session again.
                guard parts.count == 4, let fields = parts[1].array, let messages = parts[2].array else { return }
                try await runHook(id: id, fields: fields, messages: messages, attempt: parts[3].int ?? 0)
            default:
                logger.error("unexpected verdict from the expiry check", metadata: ["verdict": "\(verdict)"])
            }
        } catch {
            logger.warning(
                "expiry processing failed; the sweep will retry",
                metadata: ["session": "\(StoreInstrumentation.redacted(id))", "error": "\(error)"])
        }
    }

    private func runHook(id: String, fields: [RESPReply], messages: [RESPReply], attempt: Int) async throws {
        let hash = SessionStore.hash(fields)
        var session = try store.decodeSession(id: id, hash: hash)
        let idle = Int(hash["idle_ms"] ?? "") ?? 0
        let deadline = Int(hash["deadline_at"] ?? "") ?? 0
        let idleEnd = (Int(hash["last_activity"] ?? "") ?? 0) + idle
        let reason: ExpiryReason = hash["state"] == "deleted" ? .deleted : (deadline <= idleEnd ? .absoluteLifetime : .idleTimeout)
        let expiredAt = reason == .absoluteLifetime ? deadline : idleEnd
        if reason != .deleted { session.state = .expired }
        let expired = ExpiredSession(
            session: session,
            messages: messages.compactMap { if case .bulkString(let bytes) = $0 { MessageCoding.decode(bytes) } else { nil } },
            reason: reason, expiredAt: SessionStore.date(expiredAt), attempt: attempt)

        if reason != .deleted {
            metrics.lateness.recordMilliseconds(max(0, SessionStore.nowMilliseconds() - expiredAt))
        }
        var succeeded = false
        for tryNumber in 0..<max(1, configuration.maxHookAttempts) {
            do {
                try await onExpiry(expired)
                succeeded = true
                break
            } catch {
                metrics.hookFailures.increment()
                logger.error(
                    "cleanup hook failed",
                    metadata: ["session": "\(StoreInstrumentation.redacted(id))", "try": "\(tryNumber + 1)", "error": "\(error)"])
                if tryNumber + 1 < configuration.maxHookAttempts {
                    try? await Task.sleep(for: configuration.hookRetryDelay * (1 << tryNumber))
                }
            }
        }
        metrics.hooks(reason).increment()
        if !succeeded { logger.error("cleanup hook gave up", metadata: ["session": "\(StoreInstrumentation.redacted(id))"]) }

        // Finalize and clean the indexes in one round trip.
        let lifetime = max(0, SessionStore.nowMilliseconds() - Int(session.createdAt.timeIntervalSince1970 * 1000))
        let finalized = try await store.runScript(
            SessionScripts.finalize, id: id, keys: keys.sessionAndClaim(id), arguments: [.string(instanceToken)],
            alongside: [
                RESPCommand("ZREM", .string(keys.deadlines), .string(id)),
                RESPCommand("ZREM", .string(keys.warnings), .string(id)),
                RESPCommand("ZREM", .string(keys.userSessions(session.user)), .string(id)),
                RESPCommand("HINCRBY", .string(keys.stats), "sessions_ended", 1),
                RESPCommand("HINCRBY", .string(keys.stats), "ended_lifetime_ms", .integer(lifetime)),
                RESPCommand("PEXPIRE", .string(keys.stats), .integer(SessionStore.statsLifetime)),
            ] + (reason == .deleted ? [] : store.eventCommand(.expired, id: id, user: session.user, detail: reason.rawValue)))
        if finalized.int != 1 {
            // The lease ran out during the hook and another instance took the session over: give
            // its hint back (rare; the counters may count this session twice).
            metrics.claimsLost.increment()
            _ = try await store.redis.pipeline([
                RESPCommand("ZADD", .string(keys.deadlines), .integer(SessionStore.nowMilliseconds()), .string(id)),
                RESPCommand("PEXPIRE", .string(keys.deadlines), .integer(store.indexLifetime)),
            ])
        }
    }

    // MARK: Notifications

    private enum NotificationSource {
        case keyspace, keyevent, none
    }

    /// Makes sure Redis publishes expired-key events on keyspace channels (flags `K` and `x`), where
    /// CONFIG is allowed, and says which channels carry them.
    private func enableNotifications() async -> NotificationSource {
        var flags = ""
        do {
            let reply = try await store.redis.send(RESPCommand("CONFIG", "GET", "notify-keyspace-events"))
            flags = reply.array?.last?.string ?? ""
        } catch {
            logger.warning(
                "cannot read notify-keyspace-events (CONFIG refused); relying on the deadline sweep", metadata: ["error": "\(error)"])
            // Managed Redis often has keyevent notifications on: listen there, just in case.
            return .keyevent
        }
        let hasExpired = flags.contains("x") || flags.contains("A")
        if flags.contains("K") && hasExpired { return .keyspace }
        guard configuration.enableKeyspaceNotifications else { return flags.contains("E") && hasExpired ? .keyevent : .none }
        var wanted = flags
        if !flags.contains("K") { wanted += "K" }
        if !hasExpired { wanted += "x" }
        do {
            _ = try await store.redis.send(RESPCommand("CONFIG", "SET", "notify-keyspace-events", .string(wanted)))
            logger.info("enabled expired-key notifications", metadata: ["notify-keyspace-events": "\(wanted)"])
            return .keyspace
        } catch {
            logger.warning(
                "cannot enable expired-key notifications (CONFIG refused); relying on the deadline sweep", metadata: ["error": "\(error)"])
            return flags.contains("E") && hasExpired ? .keyevent : .none
        }
    }
}

/// A counting semaphore for tasks.
final class Limiter: Sendable {
    private let state: Mutex<(available: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(_ count: Int) {
        state = Mutex((max(1, count), []))
    }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume()
    }
}

struct ExpiryMetrics: Sendable {
    let lateness: CoreMetrics.Timer
    let claimsLost: Counter
    let sweepBatch: Recorder
    let hookFailures: Counter
    private let hooksByReason: [ExpiryReason: Counter]

    init(factory: any MetricsFactory) {
        lateness = CoreMetrics.Timer(label: "session.expiry.lateness", factory: factory)
        claimsLost = Counter(label: "session.expiry.claims_lost", factory: factory)
        sweepBatch = Recorder(label: "session.expiry.sweep_batch", factory: factory)
        hookFailures = Counter(label: "session.expiry.hook_failures", factory: factory)
        var hooks: [ExpiryReason: Counter] = [:]
        for reason in [ExpiryReason.idleTimeout, .absoluteLifetime, .deleted] {
            hooks[reason] = Counter(label: "session.expiry.hooks", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        hooksByReason = hooks
    }

    func hooks(_ reason: ExpiryReason) -> Counter { hooksByReason[reason]! }
}
