import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Tracing

/// Runs the application's cleanup hook once for every session that ends (idle timeout, absolute
/// lifetime, or deletion), across all instances, with the session's data as it was.
///
/// Every app instance runs one, as a swift-service-lifecycle `Service`, on a store configured with
/// ``SessionStoreConfiguration/expiryListener``. The listeners register in Redis and share the
/// store's buckets among themselves (rendezvous hashing); each visits its buckets when their next
/// session is due, when a keyspace notification names one of their timers, and at least every
/// ``ExpiryListenerConfiguration/fullSweepInterval``. A visit is one function call that claims the
/// bucket's ended sessions for this listener (owner token and lease) and returns their data.
///
/// Hooks run off the sweep, at most ``ExpiryListenerConfiguration/maxConcurrentHooks`` at once,
/// each attempt bounded by ``ExpiryListenerConfiguration/hookTimeout``. While a hook runs, its
/// claim is renewed; if a renewal finds the claim lost, the hook is cancelled. After the hook the
/// session is finalized (its keys and index entries removed) in batches, retried on transient
/// errors (finalize checks the owner, so a retry is safe). The hook runs exactly once unless the
/// claiming instance dies during it; then another instance runs it again after the lease
/// (``ExpiredSession/attempt`` tells).
///
/// ```swift
/// let listener = ExpiryListener(store: store) { expired in
///     try await sandboxes.release(for: expired.session.id)
/// }
/// let group = ServiceGroup(services: [listener], logger: logger)
/// try await group.run()
/// ```
public final class ExpiryListener: Service {
    /// The cleanup hook. One that throws or times out is logged and tried again, at most
    /// ``ExpiryListenerConfiguration/maxHookAttempts`` times in all. A hook is cancelled when its
    /// claim is lost (another instance then runs it).
    public typealias Hook = @Sendable (ExpiredSession) async throws -> Void
    /// The warning hook (see ``SessionStoreConfiguration/expiryWarningLead``).
    public typealias WarningHook = @Sendable (ExpiryWarning) async throws -> Void

    /// A claimed session with its data, ready for its hook.
    private struct EndedSession: Sendable {
        let id: String
        let attempt: Int
        let record: SessionRecord
        let messages: [RESPReply]
    }

    private struct InFlight {
        let bucket: Int
        /// Cancels the hook when its claim is lost.
        let lost: LostSignal
        /// Its hook has ended and a finalize call for it has been sent: a renewal that finds the
        /// claim gone raced that call (which reports a claim lost to another listener itself).
        var finalizing = false
    }

    private struct State {
        var schedule: SweepSchedule
        var inFlight: [String: InFlight] = [:]
        var finalizing: [Int: [FinalizeFunction.Item]] = [:]
        /// Sessions this listener finished lately. A visit that asks for this listener's own claims
        /// (after a lost reply) may read a claim just before its finalize runs and answer after
        /// it: such a session must not start again.
        var finished: [String: ContinuousClock.Instant] = [:]
        var lastPrune = ContinuousClock.now
    }

    private let store: ExpiryStore
    private let configuration: ExpiryListenerConfiguration
    private let onExpiry: Hook
    private let onWarning: WarningHook?
    private let metrics: ExpiryMetrics
    private let state: Mutex<State>
    private let sweepWakeup = Wakeup()
    /// Ends hooks (and warning hooks) that run past ``ExpiryListenerConfiguration/hookTimeout``.
    private let hookDeadlines: HookDeadlines
    private let finalizeWakeup = Wakeup()
    /// Sessions claimed since the notification gate last looked.
    private let recentClaims = Atomic(0)
    /// Identifies this listener's claims and registration.
    private let token = "listener-" + SessionID.make(bucket: 0)

    /// A listener for `store`'s sessions. Nothing starts before ``run()``.
    public init(
        store: SessionStore, configuration: ExpiryListenerConfiguration = ExpiryListenerConfiguration(),
        onWarning: WarningHook? = nil, onExpiry: @escaping Hook
    ) {
        self.store = ExpiryStore(store)
        self.configuration = configuration
        self.onExpiry = onExpiry
        self.onWarning = onWarning
        self.metrics = ExpiryMetrics(factory: configuration.metricsFactory)
        self.hookDeadlines = HookDeadlines(forTimeout: configuration.hookTimeout)
        var schedule = SweepSchedule(fullSweepInterval: configuration.fullSweepInterval)
        // Until the registry answers, this listener assumes it is alone.
        schedule.assign(Set(0..<store.keyspace.bucketCount))
        self.state = Mutex(State(schedule: schedule))
    }

    private var keyspace: SessionKeyspace { store.keyspace }
    private var logger: Logger { configuration.logger }

    /// Listens and sweeps until the task is cancelled or a graceful shutdown is requested; then
    /// stops claiming, lets running hooks finish, finalizes their sessions and leaves the registry.
    ///
    /// - Throws: ``SessionError/invalidConfiguration(_:)`` when the store is not configured for a
    ///   listener (``SessionStoreConfiguration/expiryListener``).
    public func run() async throws {
        try configuration.validate()
        guard store.isListenerMode else {
            throw SessionError.invalidConfiguration("an ExpiryListener needs a store with expiryListener = true")
        }
        let stopping = Atomic(false)
        let subscriber = HiredisSubscriber(configuration: store.redis.configuration)
        let notifications = configuration.keyspaceNotifications ? await enableNotifications() : false
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { background in
                background.addTask { try? await subscriber.run() }
                let pattern = self.keyspace.timerNotificationPattern(database: self.store.redis.configuration.database)
                background.addTask {
                    if notifications {
                        // Remembered by the subscriber even when the first confirmation is late.
                        try? await subscriber.subscribe(patterns: [pattern])
                    }
                    await self.collectNotifications(from: subscriber)
                }
                if notifications, configuration.pausesNotificationsWhenBusy {
                    background.addTask { await self.notificationGateLoop(subscriber, pattern: pattern) }
                }
                background.addTask { await self.registryLoop() }
                background.addTask { await self.renewalLoop() }
                background.addTask { await self.hookDeadlines.run() }
                let hooksDone = Flag()
                await withTaskGroup(of: Void.self) { finalizer in
                    finalizer.addTask { await self.finalizerLoop(until: { hooksDone.isSet }) }
                    await withDiscardingTaskGroup { work in
                        await self.sweepLoop(work: &work, isStopping: { stopping.load(ordering: .relaxed) })
                    }
                    // The finalizer ends after the pass it may be in: cancelled in the middle of a
                    // call, it could leave sessions claimed until their lease ran out (and then
                    // another listener would run their hooks again).
                    hooksDone.set()
                    self.finalizeWakeup.signal()
                }
                // Every hook has finished: finalize what they left, then stop the helpers.
                await self.finalizeRemaining()
                await subscriber.close()
                background.cancelAll()
            }
        } onGracefulShutdown: {
            stopping.store(true, ordering: .relaxed)
            self.sweepWakeup.signal()
        }
        _ = try? await store.register(token: token, lifetime: .zero)
        await subscriber.close()
    }

    // MARK: Sweeping

    private func sweepLoop(work: inout DiscardingTaskGroup, isStopping: @Sendable () -> Bool) async {
        let hookSlots = Limiter(configuration.maxConcurrentHooks)
        let warningSlots = Limiter(max(8, configuration.maxConcurrentHooks / 4))
        // Under a backlog a visit should claim several sessions: each has a fixed cost in Redis
        // (reading the bucket's index, writing its claims), whatever it claims.
        let batch = min(configuration.claimBatchSize, max(1, configuration.maxConcurrentHooks / 4))
        var backlog = false
        while !Task.isCancelled && !isStopping() {
            if hookSlots.available == 0 {
                // Every hook slot is busy: claim nothing more until one frees up.
                await hookSlots.waitUntilAvailable()
                continue
            }
            if backlog, hookSlots.available < batch {
                // Claiming as each slot frees would visit buckets one session at a time: wait for
                // a batch's worth of free slots (at most a sweep interval: hung hooks hold theirs).
                await hookSlots.waitUntilAvailable(atLeast: batch, atMost: configuration.sweepInterval)
            }
            let tick = ContinuousClock.now
            let free = hookSlots.available
            // As many buckets as give each visit a batch of the free slots, the oldest due first.
            let limit = backlog ? max(1, free / batch) : Int.max
            let due = state.withLock { $0.schedule.due(at: tick, limit: limit) }
            let truncated = due.count >= limit
            backlog = false
            var claimedAll = 0
            if !due.isEmpty {
                // One call per chunk of buckets (all on one node): its cost is shared by everything it claims.
                let chunks = stride(from: 0, to: due.count, by: ExpiryStore.bucketsPerCall).map {
                    Array(due[$0..<min($0 + ExpiryStore.bucketsPerCall, due.count)])
                }
                let budget = max(1, free / chunks.count)
                let visits = await withTaskGroup(of: [(SweepSchedule.Visit, ClaimFunction.Visit, Int)].self) { group in
                    for chunk in chunks { group.addTask { await self.visit(chunk, total: budget) } }
                    var all: [(SweepSchedule.Visit, ClaimFunction.Visit, Int)] = []
                    for await visited in group { all += visited }
                    return all
                }
                var started: [(claimed: ClaimFunction.Claimed, bucket: Int, redisNow: Int)] = []
                for (_, visit, redisNow) in visits {
                    claimedAll += visit.claimed.count
                    for claimed in visit.claimed where begin(claimed.id, bucket: visit.bucket) {
                        started.append((claimed, visit.bucket, redisNow))
                    }
                    if let onWarning {
                        for warned in visit.warned {
                            work.addTask {
                                await warningSlots.acquire()
                                await self.warn(warned, hook: onWarning)
                                warningSlots.release()
                            }
                        }
                    }
                }
                // Their data, in one round trip per few hundred sessions, then a hook each.
                for start in stride(from: 0, to: started.count, by: 256) {
                    let chunk = Array(started[start..<min(start + 256, started.count)])
                    guard let data = await read(chunk.map(\.claimed.id)) else { continue }
                    for (item, (record, messages)) in zip(chunk, data) {
                        let ended = EndedSession(id: item.claimed.id, attempt: item.claimed.attempt, record: record, messages: messages)
                        let (bucket, redisNow) = (item.bucket, item.redisNow)
                        await hookSlots.acquire()
                        work.addTask {
                            await self.process(ended, bucket: bucket, redisNow: redisNow)
                            hookSlots.release()
                        }
                    }
                }
                recentClaims.add(claimedAll, ordering: .relaxed)
                // A backlog: everything the free slots allowed was claimed, so more is due. Go on at once.
                if claimedAll >= free {
                    backlog = true
                    continue
                }
                // Buckets left out above are due too (the first ones had less than their share).
                if truncated { continue }
            }
            // At most one tick per sweep interval, however many notifications arrive; sooner than the
            // next known due time only when a notification names a bucket.
            let earliest = tick + configuration.sweepInterval
            if ContinuousClock.now < earliest { try? await Task.sleep(until: earliest) }
            let wake = state.withLock { $0.schedule.nextWake(after: ContinuousClock.now) }
            let remaining = wake - ContinuousClock.now
            if remaining > .zero { await sweepWakeup.wait(atMost: remaining) }
        }
    }

    /// Visits a chunk of buckets in one call; returns what each visit found and Redis's clock.
    private func visit(_ chunk: [SweepSchedule.Visit], total: Int) async -> [(SweepSchedule.Visit, ClaimFunction.Visit, Int)] {
        let maximum = configuration.claimBatchSize
        do {
            let outcome = try await store.claim(
                chunk.map { ClaimFunction.Request(bucket: $0.bucket, recover: $0.recover, full: $0.full) }, owner: token, maximum: maximum,
                total: total, lease: configuration.claimLease)
            let now = ContinuousClock.now
            state.withLock { state in
                var remaining = total
                for (request, visit) in zip(chunk, outcome.visits) {
                    let nextDue = visit.nextDue.map { Duration.milliseconds($0 - outcome.now) }
                    // Saturated: it claimed as many as it could take, so more may be due at once.
                    let saturated = visit.claimed.count >= min(maximum, remaining)
                    remaining = max(0, remaining - visit.claimed.count)
                    state.schedule.visited(request, at: now, nextDueIn: nextDue, saturated: saturated)
                }
            }
            metrics.claimBatch.record(outcome.visits.reduce(0) { $0 + $1.claimed.count })
            return zip(chunk, outcome.visits).map { ($0, $1, outcome.now) }
        } catch {
            // The reply may be lost after Redis claimed sessions for us: the next visits ask for
            // this listener's own claims.
            state.withLock { state in for request in chunk { state.schedule.failed(request) } }
            logger.warning("expiry visit failed", metadata: ["buckets": "\(chunk.count)", "error": "\(error)"])
            return []
        }
    }

    /// Reads claimed sessions' data; on failure gives them back to the schedule (their claims
    /// stay this listener's, and the next visit of their buckets asks for them again).
    private func read(_ ids: [String]) async -> [(record: SessionRecord, messages: [RESPReply])]? {
        do {
            return try await store.data(of: ids)
        } catch {
            logger.warning("reading claimed sessions failed; asking for them again", metadata: ["error": "\(error)"])
            state.withLock { state in
                for id in ids {
                    guard let entry = state.inFlight.removeValue(forKey: id) else { continue }
                    state.schedule.failed(SweepSchedule.Visit(bucket: entry.bucket, recover: true, full: false))
                }
            }
            return nil
        }
    }

    private func begin(_ id: String, bucket: Int) -> Bool {
        state.withLock { state in
            if state.inFlight[id] != nil || state.finished[id] != nil { return false }
            state.inFlight[id] = InFlight(bucket: bucket, lost: LostSignal())
            return true
        }
    }

    // MARK: One session

    private func process(_ claimed: EndedSession, bucket: Int, redisNow: Int) async {
        let id = claimed.id
        guard let lost = state.withLock({ $0.inFlight[id]?.lost }) else { return }
        if claimed.record.fields.isEmpty {
            // The data outlived no listener: its safety TTL ran out. Nothing to hand to a hook.
            metrics.dataLost.increment()
            logger.error(
                "a session ended with no data left: no listener claimed it within the safety TTL",
                metadata: ["session": "\(SessionID.redacted(id))"])
            enqueueFinalize(.init(id: id, reason: .lost, user: "", createdAt: redisNow), bucket: bucket)
            return
        }
        let expired: ExpiredSession
        let createdAt = (try? claimed.record.milliseconds(SessionKeyspace.Field.createdAt)) ?? redisNow
        let user = claimed.record.user ?? ""
        do {
            expired = try expiredSession(claimed)
        } catch {
            logger.error(
                "cannot read an ended session; finalizing it", metadata: ["session": "\(SessionID.redacted(id))", "error": "\(error)"])
            enqueueFinalize(.init(id: id, reason: .idleTimeout, user: user, createdAt: createdAt), bucket: bucket)
            return
        }
        let reason = await finalReason(of: claimed, expired: expired)
        if reason != .bound {
            if expired.reason != .deleted {
                metrics.lateness.recordMilliseconds(max(0, redisNow - Int(expired.expiredAt.timeIntervalSince1970 * 1000)))
            }
            switch await runHook(expired, lost: lost) {
            case .lost:
                // Another listener holds the session now and runs its hook.
                metrics.claimsLost.increment()
                end(id)
                return
            case .completed, .gaveUp:
                metrics.hooks(expired.reason).increment()
            }
        }
        enqueueFinalize(.init(id: id, reason: reason, user: user, createdAt: createdAt), bucket: bucket)
    }

    private enum HookOutcome {
        case completed, gaveUp, lost
    }

    private func runHook(_ expired: ExpiredSession, lost: LostSignal) async -> HookOutcome {
        if configuration.tracer is NoOpTracer { return await runHookAttempts(expired, lost: lost, span: nil) }
        return await tracedHook(configuration.tracer, expired, lost: lost)
    }

    private func tracedHook<Tracer: Tracing.Tracer>(_ tracer: Tracer, _ expired: ExpiredSession, lost: LostSignal) async -> HookOutcome {
        await tracer.withSpan("session.expiry.hook", ofKind: .internal) { span in
            span.attributes["session.id_prefix"] = SessionID.redacted(expired.session.id)
            span.attributes["session.expiry.reason"] = expired.reason.rawValue
            let outcome = await runHookAttempts(expired, lost: lost, span: span)
            span.attributes["session.expiry.outcome"] = "\(outcome)"
            if outcome != .completed { span.setStatus(SpanStatus(code: .error, message: "\(outcome)")) }
            return outcome
        }
    }

    private func runHookAttempts(_ expired: ExpiredSession, lost: LostSignal, span: (any Span)?) async -> HookOutcome {
        let id = expired.session.id
        for attempt in 0..<configuration.maxHookAttempts {
            span?.attributes["session.expiry.attempts"] = attempt + 1
            switch await lost.race(timeout: configuration.hookTimeout, deadlines: hookDeadlines, { try await self.onExpiry(expired) }) {
            case .finished(.success): return .completed
            case .lost: return .lost
            case .finished(.failure(let error)):
                metrics.hookFailures.increment()
                span?.recordError(error)
                logger.error(
                    "cleanup hook failed",
                    metadata: ["session": "\(SessionID.redacted(id))", "try": "\(attempt + 1)", "error": "\(error)"])
            case .timedOut:
                metrics.hookFailures.increment()
                logger.error(
                    "cleanup hook timed out",
                    metadata: ["session": "\(SessionID.redacted(id))", "try": "\(attempt + 1)", "timeout": "\(configuration.hookTimeout)"])
            }
            if attempt + 1 < configuration.maxHookAttempts {
                try? await Task.sleep(for: configuration.hookRetryDelay * (1 << attempt))
                if lost.isLost { return .lost }
            }
        }
        logger.error("cleanup hook gave up; finalizing the session", metadata: ["session": "\(SessionID.redacted(id))"])
        return .gaveUp
    }

    /// The session as its hook receives it.
    private func expiredSession(_ claimed: EndedSession) throws(SessionError) -> ExpiredSession {
        let record = claimed.record
        typealias Field = SessionKeyspace.Field
        var session = try record.session(id: claimed.id)
        let idle = try record.milliseconds(Field.idle)
        let deadline = try record.milliseconds(Field.deadline)
        let lastActivity = try record.milliseconds(Field.lastActivity)
        let reason: ExpiryReason
        let expiredAt: Int
        if record[Field.state] == SessionState.deleted.rawValue {
            (reason, expiredAt) = (.deleted, lastActivity)
        } else if deadline <= lastActivity + idle + 10 {
            // (Within a few ms: the last activity is derived from TIME and PTTL, read at slightly
            // different instants, so a timer capped at the deadline can look a millisecond early.)
            (reason, expiredAt) = (.absoluteLifetime, deadline)
            session.state = .expired
        } else {
            (reason, expiredAt) = (.idleTimeout, lastActivity + idle)
            session.state = .expired
        }
        let messages = claimed.messages.compactMap { value -> SessionMessage? in
            if case .bulkString(let bytes) = value { return MessageCoding.decode(bytes) }
            return nil
        }
        return ExpiredSession(
            session: session, messages: messages, reason: reason, expiredAt: SessionRecord.date(expiredAt), attempt: claimed.attempt)
    }

    /// How to finalize: as it ended, or `.bound` when the session is one half of an interrupted
    /// bind whose other half carries on (then no hook runs for this half).
    private func finalReason(of claimed: EndedSession, expired: ExpiredSession) async -> FinalizeFunction.Reason {
        let ordinary: FinalizeFunction.Reason =
            switch expired.reason {
            case .idleTimeout: .idleTimeout
            case .absoluteLifetime: .absoluteLifetime
            case .deleted: .deleted
            }
        do {
            if let newID = claimed.record[SessionKeyspace.Field.bindingTo], keyspace.bucket(ofSession: newID) != nil {
                // The anonymous half: if the bound session exists, it carries on (and gets the hook).
                if try await store.partner(of: newID).exists { return .bound }
            }
            if let oldID = claimed.record[SessionKeyspace.Field.boundFrom], keyspace.bucket(ofSession: oldID) != nil {
                // The bound half: if the anonymous one is still in use, or was bound again elsewhere,
                // this copy is the orphan.
                let old = try await store.partner(of: oldID)
                if old.exists && (old.isAlive || old.bindingTo != claimed.id) { return .bound }
            }
        } catch {
            logger.warning(
                "cannot check the other half of a bound session; running its hook",
                metadata: ["session": "\(SessionID.redacted(claimed.id))", "error": "\(error)"])
        }
        return ordinary
    }

    private func warn(_ warned: ClaimFunction.Warned, hook: @escaping WarningHook) async {
        do {
            guard let record = try await store.data(of: [warned.id]).first?.record, !record.fields.isEmpty else { return }
            let session = try record.session(id: warned.id)
            let outcome = await LostSignal().race(timeout: configuration.hookTimeout, deadlines: hookDeadlines) {
                try await hook(ExpiryWarning(session: session, remaining: .milliseconds(warned.millisecondsLeft)))
            }
            if case .finished(.failure(let error)) = outcome { throw error }
            if case .timedOut = outcome { throw SessionError.redis(.timedOut(after: configuration.hookTimeout)) }
        } catch {
            logger.error("expiry warning hook failed", metadata: ["session": "\(SessionID.redacted(warned.id))", "error": "\(error)"])
        }
    }

    // MARK: Finalizing

    private func enqueueFinalize(_ item: FinalizeFunction.Item, bucket: Int) {
        state.withLock { $0.finalizing[bucket, default: []].append(item) }
        finalizeWakeup.signal()
    }

    private func end(_ id: String) {
        let lease = configuration.claimLease
        state.withLock { state in
            state.inFlight[id] = nil
            let now = ContinuousClock.now
            state.finished[id] = now
            // A stale reply can only be as old as a lease: forget what is older than two.
            if now - state.lastPrune > lease {
                state.finished = state.finished.filter { now - $0.value < lease * 2 }
                state.lastPrune = now
            }
        }
    }

    /// Finalizes finished sessions in batches (one call for many buckets); failed batches are
    /// retried (their claims are renewed meanwhile).
    /// Until `isDone` (then ``finalizeRemaining()`` takes over), or cancellation.
    private func finalizerLoop(until isDone: @Sendable () -> Bool) async {
        var failures = 0
        while !Task.isCancelled, !isDone() {
            // A sweep interval's worth of finished hooks makes one batch (finalizing later never
            // delays a hook; batches share the cost of each call); longer after failures.
            await finalizeWakeup.wait(atMost: .milliseconds(failures == 0 ? 500 : min(1000, 20 << min(failures, 6))))
            if isDone() { return }
            if failures == 0 { try? await Task.sleep(for: configuration.sweepInterval) }
            if Task.isCancelled { return }
            failures = await finalizePending() ? 0 : failures + 1
        }
    }

    /// One pass over the pending finalizations; false when some failed.
    private func finalizePending() async -> Bool {
        let pending = state.withLock { state in
            defer { state.finalizing = [:] }
            for item in state.finalizing.values.joined() { state.inFlight[item.id]?.finalizing = true }
            return state.finalizing.map { (bucket: $0.key, items: $0.value) }
        }
        guard !pending.isEmpty else { return true }
        return await withTaskGroup(of: Bool.self) { group in
            for start in stride(from: 0, to: pending.count, by: ExpiryStore.bucketsPerCall) {
                let chunk = Array(pending[start..<min(start + ExpiryStore.bucketsPerCall, pending.count)])
                group.addTask { await self.finalize(chunk) }
            }
            var allDone = true
            for await done in group where !done { allDone = false }
            return allDone
        }
    }

    private func finalize(_ chunk: [(bucket: Int, items: [FinalizeFunction.Item])]) async -> Bool {
        do {
            let outcomes = try await store.finalize(chunk, owner: token)
            for (item, outcome) in zip(chunk.flatMap(\.items), outcomes) {
                if outcome == .lost {
                    metrics.claimsLost.increment()
                    logger.warning(
                        "a session's claim was lost before it was finalized; another listener will run its hook again",
                        metadata: ["session": "\(SessionID.redacted(item.id))"])
                }
                end(item.id)
            }
            return true
        } catch {
            logger.warning("finalize failed; retrying", metadata: ["buckets": "\(chunk.count)", "error": "\(error)"])
            state.withLock { state in
                for (bucket, items) in chunk {
                    state.finalizing[bucket, default: []].append(contentsOf: items)
                    for item in items { state.inFlight[item.id]?.finalizing = false }
                }
            }
            return false
        }
    }

    /// After the last hook: finalize what is left, retrying for at most a claim lease.
    private func finalizeRemaining() async {
        let deadline = ContinuousClock.now + configuration.claimLease
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if await finalizePending(), state.withLock({ $0.finalizing.isEmpty }) { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    // MARK: Claims and registration

    /// Renews the claims of running hooks and pending finalizations every third of the lease, in one
    /// call per chunk of buckets; cancels the hooks whose claims were lost.
    private func renewalLoop() async {
        let period = configuration.claimLease / 3
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            if Task.isCancelled { return }
            let byBucket = state.withLock { state in
                Dictionary(grouping: state.inFlight, by: { $0.value.bucket }).map { (bucket: $0.key, ids: $0.value.map(\.key)) }
            }
            await withTaskGroup(of: Void.self) { group in
                for start in stride(from: 0, to: byBucket.count, by: ExpiryStore.bucketsPerCall) {
                    let chunk = Array(byBucket[start..<min(start + ExpiryStore.bucketsPerCall, byBucket.count)])
                    group.addTask {
                        do {
                            let held = try await self.store.renew(chunk, owner: self.token, lease: self.configuration.claimLease)
                            for id in chunk.flatMap(\.ids) where !held.contains(id) { self.claimLost(id) }
                        } catch {
                            // Transient: the next renewal tries again, well within the lease.
                            self.logger.warning("claim renewal failed", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
        }
    }

    private func claimLost(_ id: String) {
        let entry = state.withLock { state -> InFlight? in
            // Finalized meanwhile, or being finalized: not lost.
            guard let entry = state.inFlight[id], !entry.finalizing else { return nil }
            // A finished hook waiting for finalize gives it up: another listener runs it again.
            for bucket in state.finalizing.keys { state.finalizing[bucket]?.removeAll { $0.id == id } }
            return entry
        }
        guard let entry else { return }
        entry.lost.fire()
        logger.warning("a claim was lost while its hook ran; cancelling the hook", metadata: ["session": "\(SessionID.redacted(id))"])
    }

    /// Keeps this listener registered and its share of the buckets up to date.
    private func registryLoop() async {
        let lifetime = configuration.registrationLifetime
        var last: Set<Int>?
        while !Task.isCancelled {
            do {
                let members = try await store.register(token: token, lifetime: lifetime)
                let mine = BucketAssignment(me: token, members: members, bucketCount: keyspace.bucketCount).buckets
                if mine != last {
                    state.withLock { $0.schedule.assign(mine) }
                    sweepWakeup.signal()
                    logger.debug("expiry listener buckets", metadata: ["listeners": "\(members.count)", "buckets": "\(mine.count)"])
                    last = mine
                }
            } catch {
                logger.warning("expiry listener registration failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: lifetime / 3)
        }
    }

    // MARK: Notifications

    /// Every second, pauses or resumes the keyspace notifications as the sweep's load says
    /// (``NotificationGate``). While paused, the sweep alone finds the ended sessions: at such
    /// rates it visits every bucket at every tick anyway.
    private func notificationGateLoop(_ subscriber: HiredisSubscriber, pattern: String) async {
        var gate = NotificationGate()
        let window = Duration.seconds(1)
        while !Task.isCancelled {
            do { try await Task.sleep(for: window) } catch { return }
            let claims = recentClaims.exchange(0, ordering: .relaxed)
            let buckets = state.withLock { $0.schedule.ownedCount }
            switch gate.measured(claims: claims, buckets: buckets, sweepIntervals: window / configuration.sweepInterval) {
            case .none:
                break
            case .unsubscribe:
                logger.info(
                    "pausing keyspace notifications: every bucket is due at every sweep",
                    metadata: ["claims_per_s": "\(claims)", "buckets": "\(buckets)"])
                try? await subscriber.unsubscribe(patterns: [pattern])
            case .subscribe:
                logger.info("resuming keyspace notifications", metadata: ["claims_per_s": "\(claims)", "buckets": "\(buckets)"])
                try? await subscriber.subscribe(patterns: [pattern])
            }
        }
    }

    private func collectNotifications(from subscriber: HiredisSubscriber) async {
        // Under a sustained overload every dropped notification brings a gap notice: one warning
        // per 10 s, with the total dropped so far.
        var lastGapWarning: ContinuousClock.Instant? = nil
        for await event in subscriber.events {
            switch event {
            case .message(let channel, _, let payload):
                // Keyspace channel: `__keyspace@<db>__:<key>`, payload: the event.
                guard payload.readableBytesView.elementsEqual("expired".utf8),
                    let bucket = keyspace.bucket(ofTimerNotification: channel.utf8)
                else { continue }
                let news = state.withLock { state in
                    // Most notifications echo this listener's own claims (a claim's read of an
                    // ended timer makes Redis expire it and notify): they would only cause a
                    // second, empty visit. Other listeners' buckets are theirs to visit.
                    guard state.schedule.owns(bucket) else { return false }
                    if let id = keyspace.session(ofTimerNotification: channel), state.inFlight[id] != nil || state.finished[id] != nil {
                        return false
                    }
                    state.schedule.notify(bucket)
                    return true
                }
                if news { sweepWakeup.signal() }
            case .resubscribed:
                logger.info("expired-key notifications were missed while reconnecting; the sweep covers them")
                // A new primary (failover, resharding) has its own setting: CONFIG is not replicated.
                if configuration.keyspaceNotifications { _ = await enableNotifications() }
            case .gap(let dropped):
                let now = ContinuousClock.now
                if let last = lastGapWarning, now - last < .seconds(10) { continue }
                lastGapWarning = now
                logger.warning(
                    "expired-key notifications overflowed (this listener cannot keep up); the sweep covers them",
                    metadata: ["dropped": "\(dropped)"])
            }
        }
    }

    /// Makes sure Redis publishes expired-key events on keyspace channels (flags `K` and `x`),
    /// where CONFIG is allowed. Returns whether they are on.
    private func enableNotifications() async -> Bool {
        let redis = store.redis
        let primaries: [String]
        do {
            primaries = try await redis.primaries()
        } catch {
            logger.warning("cannot list the primaries; relying on the sweep", metadata: ["error": "\(error)"])
            return false
        }
        // Notifications are node-local and so is their setting: every primary needs it.
        var allOn = true
        for primary in primaries {
            var flags = ""
            do {
                flags =
                    try await redis.send(RESPCommand("CONFIG", "GET", "notify-keyspace-events"), toPrimary: primary).array?.last?.string
                    ?? ""
            } catch {
                logger.warning(
                    "cannot read notify-keyspace-events (CONFIG refused); relying on the sweep",
                    metadata: ["primary": "\(primary)", "error": "\(error)"])
                allOn = false
                continue
            }
            let hasExpired = flags.contains("x") || flags.contains("A")
            if flags.contains("K") && hasExpired { continue }
            guard configuration.enableKeyspaceNotifications else {
                allOn = false
                continue
            }
            var wanted = flags
            if !flags.contains("K") { wanted += "K" }
            if !hasExpired { wanted += "x" }
            do {
                _ = try await redis.send(RESPCommand("CONFIG", "SET", "notify-keyspace-events", .string(wanted)), toPrimary: primary)
                logger.info(
                    "enabled expired-key notifications", metadata: ["primary": "\(primary)", "notify-keyspace-events": "\(wanted)"])
            } catch {
                logger.warning(
                    "cannot enable expired-key notifications (CONFIG refused); relying on the sweep",
                    metadata: ["primary": "\(primary)", "error": "\(error)"])
                allOn = false
            }
        }
        return allOn
    }
}

struct ExpiryMetrics: Sendable {
    let lateness: CoreMetrics.Timer
    let claimsLost: Counter
    let claimBatch: Recorder
    let hookFailures: Counter
    let dataLost: Counter
    private let hooksByReason: [ExpiryReason: Counter]

    init(factory: any MetricsFactory) {
        lateness = CoreMetrics.Timer(label: "session.expiry.lateness", factory: factory)
        claimsLost = Counter(label: "session.expiry.claims_lost", factory: factory)
        claimBatch = Recorder(label: "session.expiry.claim_batch", factory: factory)
        hookFailures = Counter(label: "session.expiry.hook_failures", factory: factory)
        dataLost = Counter(label: "session.expiry.data_lost", factory: factory)
        var hooks: [ExpiryReason: Counter] = [:]
        for reason in [ExpiryReason.idleTimeout, .absoluteLifetime, .deleted] {
            hooks[reason] = Counter(label: "session.expiry.hooks", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        hooksByReason = hooks
    }

    func hooks(_ reason: ExpiryReason) -> Counter { hooksByReason[reason]! }
}
