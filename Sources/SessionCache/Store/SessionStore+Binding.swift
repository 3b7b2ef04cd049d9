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
        try validate(user: user)
        let proposedID = SessionID.make(bucket: keyspace.bucket(ofUser: user))
        timers.forget(id)
        return try await instrumentation.run("bind", session: id) {
            let marked = try await redis.call(BindBeginFunction(sessionKey: keyspace.session(id), newID: proposedID))
            guard case .marked(let expiry, let lastSeen, let fields, let messages, let newID) = marked else {
                if case .notAnonymous = marked { throw SessionError.notAnonymous }
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
            guard case .placed(let timer, let now) = placed else {
                // The id of a bind under way, placed for another user of the same bucket.
                if case .exists = placed { throw SessionError.notAnonymous }
                throw SessionError.notFound
            }
            switch try await redis.call(BindFinishFunction(sessionKey: keyspace.session(id), newID: newID, eventsChannel: eventsChannel)) {
            case .finished, .notFound:
                break
            case .lapsed, .other:
                _ = try await redis.call(BindUndoFunction(sessionKey: keyspace.session(newID), oldID: id))
                throw SessionError.bindingInProgress
            }
            timers.remember(timer, for: newID, redisTime: now, keyspace: keyspace)
            var session = try record.session(id: newID, lastActivity: now, lastSeen: lastSeen)
            session.user = user
            return session
        }
    }
}
