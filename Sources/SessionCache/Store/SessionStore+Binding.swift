import Foundation
import HiredisNIO

extension SessionStore {
    /// Binds an anonymous session to `user` at login: the session moves to the user's bucket under
    /// a new id (which also rotates it, against session fixation), with everything it holds.
    /// Returns it under its new id; the old id is dead.
    ///
    /// Two buckets are two Redis Cluster slots, so this takes three calls, ordered so that a crash
    /// or a lost connection at any point leaves the old session alive: mark the old one, write the
    /// new one, remove the old one. While marked (at most 30 seconds), writes to the old session
    /// are refused with ``SessionError/bindingInProgress`` (before, a write between the copy and
    /// the removal was acknowledged and lost). Every bind of one session converges on one new id:
    /// two tabs logging in at once, or a retry after a failure, get the same session, and there is
    /// one live session and one cleanup hook. If the mark lapsed before the removal (the old
    /// session may have taken writes since), the copy is removed again and the call throws
    /// ``SessionError/bindingInProgress``: retry.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive,
    ///   ``SessionError/notAnonymous`` when it has a user already (or is bound to another user).
    public func bind(_ id: String, to user: String) async throws(SessionError) -> Session {
        try validate(id: id)
        try Self.validate(user: user)
        let proposedID = SessionID.make(bucket: keyspace.bucket(ofUser: user))
        timers.forget(id)
        return try await instrumentation.run("bind", session: id) {
            let marked = try await redis.call(BindBeginFunction(sessionKey: keyspace.session(id), newID: proposedID))
            let expiry: Int
            let lastSeen: Int
            let fields: [RESPReply]
            let messages: [RESPReply]
            let newID: String
            switch marked {
            case .marked(let markedExpiry, let markedLastSeen, let markedFields, let markedMessages, let markedID):
                (expiry, lastSeen, fields, messages, newID) = (markedExpiry, markedLastSeen, markedFields, markedMessages, markedID)
            case .bound(let boundID):
                // A bind of this session finished moments ago (another tab's login, or this call's
                // retry after a lost reply): its result, if it is this user's and alive.
                guard let session = try await get(boundID), session.user == user else { throw SessionError.notFound }
                return session
            case .notAnonymous:
                throw SessionError.notAnonymous
            case .notAlive:
                throw SessionError.notFound
            }
            // A bind under way for another user (its id names another bucket).
            guard keyspace.bucket(ofSession: newID) == keyspace.bucket(ofUser: user) else { throw SessionError.notAnonymous }
            let record = SessionRecord(fields)
            let mode = try resolve(record[SessionKeyspace.Field.mode].flatMap(TimeoutMode.init(storedName:)) ?? configuration.defaultMode)
            let placed = try await redis.call(
                BindPlaceFunction(
                    sessionKey: keyspace.session(newID), user: user, oldID: id, timerExpiry: expiry, lastSeen: lastSeen,
                    retention: retention(for: mode), fields: fields, messages: messages))
            guard case .placed(_, let now) = placed else {
                // The id of a bind under way, placed for another user of the same bucket.
                if case .exists = placed { throw SessionError.notAnonymous }
                throw SessionError.notFound
            }
            // Anything but finished: the copy goes, and the old session's fate decides.
            switch try await redis.call(BindFinishFunction(sessionKey: keyspace.session(id), newID: newID, eventsChannel: eventsChannel)) {
            case .finished:
                break
            case .notFound, .notAlive:
                _ = try await redis.call(BindUndoFunction(sessionKey: keyspace.session(newID), oldID: id))
                throw SessionError.notFound
            case .lapsed, .other:
                _ = try await redis.call(BindUndoFunction(sessionKey: keyspace.session(newID), oldID: id))
                throw SessionError.bindingInProgress
            }
            // The user's cap, once the log-in holds: a bind that failed above ended none of the
            // user's other sessions. (Should this call fail, its error is thrown; the log-in held
            // and a retried bind returns the same session, and the user's next create applies it.)
            if let cap = configuration.limits.maxSessionsPerUser {
                _ = try await redis.call(
                    CapUserFunction(
                        sessionKey: keyspace.session(newID), user: user, maxSessionsPerUser: cap, eventsChannel: eventsChannel,
                        indexLifetimeMilliseconds: configuration.indexLifetime.wholeMilliseconds))
            }
            // Not remembered for the touch cache: the first touch goes through the function, which
            // pushes the data's TTL out before any plain PEXPIRE may move the timer (see rotate).
            var session = try record.session(id: newID, lastActivity: now, lastSeen: lastSeen)
            session.user = user
            return session
        }
    }
}
