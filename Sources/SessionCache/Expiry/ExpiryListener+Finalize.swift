import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Tracing

// After the hooks: finalizing sessions in batches, and renewing the claims meanwhile.
extension ExpiryListener {
    /// The hook of a session ended (or there was none to run): its finalize joins the next batch.
    func enqueueFinalize(_ item: FinalizeFunction.Item) {
        let queued = state.withLock { $0.claims.hookEnded(item.id, finalize: item) }
        if queued { finalizeWakeup.signal() }
    }

    /// Finalizes finished sessions in batches (one call for many buckets); failed batches are
    /// retried (their claims are renewed meanwhile).
    /// Until `isDone` (then ``finalizeRemaining()`` takes over), or cancellation.
    func finalizerLoop(until isDone: @Sendable () -> Bool) async {
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
    func finalizePending() async -> Bool {
        let pending = state.withLock { $0.claims.takeFinalizeBatch() }
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

    func finalize(_ chunk: [(bucket: Int, items: [FinalizeFunction.Item])]) async -> Bool {
        do {
            let outcomes = try await store.finalize(chunk, owner: token)
            for (item, outcome) in zip(chunk.flatMap(\.items), outcomes) where outcome == .lost {
                metrics.claimsLost.increment()
                logger.warning(
                    "a session's claim was lost before it was finalized; another listener will run its hook again",
                    metadata: ["session": "\(SessionID.redacted(item.id))"])
            }
            let now = ContinuousClock.now
            state.withLock { $0.claims.finalized(chunk.flatMap { $0.items.map(\.id) }, at: now) }
            return true
        } catch {
            logger.warning("finalize failed; retrying", metadata: ["buckets": "\(chunk.count)", "error": "\(error)"])
            state.withLock { $0.claims.finalizeFailed(chunk.flatMap { $0.items.map(\.id) }) }
            return false
        }
    }

    /// After the last hook: finalize what is left, retrying for at most a claim lease.
    func finalizeRemaining() async {
        let deadline = ContinuousClock.now + configuration.claimLease
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if await finalizePending(), !state.withLock({ $0.claims.hasPendingFinalize }) { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    // MARK: Claims and registration

    /// Renews the claims of running hooks and pending finalizations every third of the lease, in one
    /// call per chunk of buckets; cancels the hooks whose claims were lost.
    func renewalLoop() async {
        let period = configuration.claimLease / 3
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            if Task.isCancelled { return }
            let byBucket = state.withLock { $0.claims.renewals() }
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

    func claimLost(_ id: String) {
        let action = state.withLock { $0.claims.renewalLost(id, at: .now) }
        switch action {
        case .cancelHook(let lost):
            lost.fire()
            logger.warning("a claim was lost while its hook ran; cancelling the hook", metadata: ["session": "\(SessionID.redacted(id))"])
        case .gaveUpFinalize:
            metrics.claimsLost.increment()
            logger.warning(
                "a session's claim was lost before it was finalized; another listener will run its hook again",
                metadata: ["session": "\(SessionID.redacted(id))"])
        case .none:
            break
        }
    }
}
