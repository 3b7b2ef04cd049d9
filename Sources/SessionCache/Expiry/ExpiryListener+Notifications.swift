import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Tracing

// Keyspace notifications: they wake the sweep early; paused when the sweep alone keeps up.
extension ExpiryListener {
    /// Every second, pauses or resumes the keyspace notifications as the sweep's load says
    /// (``NotificationGate``). While paused, the sweep alone finds the ended sessions: at such
    /// rates it visits every bucket at every tick anyway.
    func notificationGateLoop(_ subscriber: HiredisSubscriber, pattern: String) async {
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

    func collectNotifications(from subscriber: HiredisSubscriber) async {
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
                    if let id = keyspace.session(ofTimerNotification: channel), state.claims.isKnown(id) {
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
    /// where CONFIG is allowed. Returns whether they may be on (false: some primary is known to
    /// lack them, or the primaries cannot be listed): where CONFIG is refused they may be.
    func enableNotifications() async -> Bool {
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
                flags = try await redis.execute(CONFIG_GET("notify-keyspace-events"), toPrimary: primary) ?? ""
            } catch let error as HiredisError where error.serverError != nil {
                // Managed Redis refuses CONFIG; its operator sets the flags in the server's own
                // configuration (the Deployment article says so). Subscribed all the same: if they
                // are on, notifications arrive; if not, the sweep does the work, as it would.
                logger.notice(
                    "cannot read notify-keyspace-events (CONFIG refused); subscribing in case the server's configuration sets them",
                    metadata: ["primary": "\(primary)", "error": "\(error)"])
                continue
            } catch {
                // Not answered (a timeout, a lost connection, cancellation): unknown, and not set either.
                logger.warning(
                    "cannot read notify-keyspace-events; relying on the sweep", metadata: ["primary": "\(primary)", "error": "\(error)"])
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
                try await redis.execute(CONFIG_SET("notify-keyspace-events", wanted), toPrimary: primary)
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
