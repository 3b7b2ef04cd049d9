import CoreMetrics
import Foundation
import HiredisNIO
import Logging
import NIOCore
import ServiceLifecycle
import Tracing

// One session: its hook (attempts, timeout, cancellation when the claim is lost) and warnings.
extension ExpiryListener {
    func process(_ claimed: EndedSession, redisNow: Int) async {
        let id = claimed.id
        guard let lost = state.withLock({ $0.claims.cancellation(of: id) }) else { return }
        if claimed.record.fields.isEmpty {
            // The data outlived no listener: its safety TTL ran out. Nothing to hand to a hook.
            metrics.dataLost.increment()
            logger.error(
                "a session ended with no data left: no listener claimed it within the safety TTL",
                metadata: ["session": "\(SessionID.redacted(id))"])
            enqueueFinalize(.init(id: id, reason: .lost, user: "", createdAt: redisNow))
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
            enqueueFinalize(.init(id: id, reason: .idleTimeout, user: user, createdAt: createdAt))
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
                state.withLock { $0.claims.hookLost(id, at: .now) }
                return
            case .completed, .gaveUp:
                metrics.hooks(expired.reason).increment()
            }
        }
        enqueueFinalize(.init(id: id, reason: reason, user: user, createdAt: createdAt))
    }

    enum HookOutcome {
        case completed, gaveUp, lost
    }

    func runHook(_ expired: ExpiredSession, lost: LostSignal) async -> HookOutcome {
        if configuration.tracer is NoOpTracer { return await runHookAttempts(expired, lost: lost, span: nil) }
        return await tracedHook(configuration.tracer, expired, lost: lost)
    }

    func tracedHook<Tracer: Tracing.Tracer>(_ tracer: Tracer, _ expired: ExpiredSession, lost: LostSignal) async -> HookOutcome {
        await tracer.withSpan("session.expiry.hook", ofKind: .internal) { span in
            span.attributes["session.id_prefix"] = SessionID.redacted(expired.session.id)
            span.attributes["session.expiry.reason"] = expired.reason.rawValue
            let outcome = await runHookAttempts(expired, lost: lost, span: span)
            span.attributes["session.expiry.outcome"] = "\(outcome)"
            if outcome != .completed { span.setStatus(SpanStatus(code: .error, message: "\(outcome)")) }
            return outcome
        }
    }

    func runHookAttempts(_ expired: ExpiredSession, lost: LostSignal, span: (any Span)?) async -> HookOutcome {
        let id = expired.session.id
        for attempt in 0..<configuration.maxHookAttempts {
            span?.attributes["session.expiry.attempts"] = attempt + 1
            switch await lost.race(
                timeout: configuration.hookTimeout, stopGrace: configuration.hookStopGrace, deadlines: hookDeadlines,
                { try await self.onExpiry(expired) })
            {
            case .finished(.success): return .completed
            case .lost: return .lost
            case .abandoned:
                metrics.hookFailures.increment()
                metrics.hooksAbandoned.increment()
                logger.error(
                    "cleanup hook ignored its cancellation; abandoned, finalizing the session",
                    metadata: ["session": "\(SessionID.redacted(id))", "try": "\(attempt + 1)", "grace": "\(configuration.hookStopGrace)"])
                return .gaveUp
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
    func expiredSession(_ claimed: EndedSession) throws(SessionError) -> ExpiredSession {
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
    func finalReason(of claimed: EndedSession, expired: ExpiredSession) async -> FinalizeFunction.Reason {
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

    func warn(_ warned: ClaimFunction.Warned, hook: @escaping WarningHook) async {
        do {
            guard let record = try await store.data(of: [warned.id]).first?.record, !record.fields.isEmpty else { return }
            let session = try record.session(id: warned.id)
            let outcome = await LostSignal().race(
                timeout: configuration.hookTimeout, stopGrace: configuration.hookStopGrace, deadlines: hookDeadlines
            ) {
                try await hook(ExpiryWarning(session: session, remaining: .milliseconds(warned.millisecondsLeft)))
            }
            switch outcome {
            case .finished(.failure(let error)): throw error
            case .timedOut, .abandoned: throw SessionError.redis(.timedOut(after: configuration.hookTimeout))
            case .finished(.success), .lost: break
            }
        } catch {
            logger.error("expiry warning hook failed", metadata: ["session": "\(SessionID.redacted(warned.id))", "error": "\(error)"])
        }
    }
}
