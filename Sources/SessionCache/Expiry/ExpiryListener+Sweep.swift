import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Tracing

// Sweeping: which buckets to visit when, the visits that claim ended sessions, and the
// registry that shares the buckets among the listeners.
extension ExpiryListener {
    func sweepLoop(work: inout DiscardingTaskGroup, isStopping: @Sendable () -> Bool) async {
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
                var started: [(claimed: ClaimFunction.Claimed, redisNow: Int)] = []
                for (_, visit, redisNow) in visits {
                    claimedAll += visit.claimed.count
                    for claimed in visit.claimed where begin(claimed.id, bucket: visit.bucket) {
                        started.append((claimed, redisNow))
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
                        let redisNow = item.redisNow
                        await hookSlots.acquire()
                        work.addTask {
                            await self.process(ended, redisNow: redisNow)
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
    func visit(_ chunk: [SweepSchedule.Visit], total: Int) async -> [(SweepSchedule.Visit, ClaimFunction.Visit, Int)] {
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
    func read(_ ids: [String]) async -> [(record: SessionRecord, messages: [RESPReply])]? {
        do {
            return try await store.data(of: ids)
        } catch {
            logger.warning("reading claimed sessions failed; asking for them again", metadata: ["error": "\(error)"])
            state.withLock { state in
                for bucket in state.claims.readFailed(ids) {
                    state.schedule.failed(SweepSchedule.Visit(bucket: bucket, recover: true, full: false))
                }
            }
            return nil
        }
    }

    func begin(_ id: String, bucket: Int) -> Bool {
        state.withLock { $0.claims.claimed(id, bucket: bucket, cancellation: LostSignal()) }
    }

    /// Keeps this listener registered and its share of the buckets up to date.
    func registryLoop() async {
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
}
