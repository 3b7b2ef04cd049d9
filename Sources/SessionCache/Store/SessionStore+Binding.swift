import Foundation
import HiredisNIO

extension SessionStore {
    /// Binds an anonymous session to `user` at login: the session moves to the user's bucket under
    /// a new id (which also rotates it, against session fixation), with everything it holds.
    /// Returns it under its new id; the old id is dead.
    ///
    /// Two buckets are two Redis Cluster slots, so this takes three calls, ordered so that a crash
    /// or a lost connection at any point leaves the old session alive: mark the old one, write the
    /// new one, remove the old one. If the last step did not happen, both exist until one ends; the
    /// expiry listener then runs one cleanup hook for the pair, not two.
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive,
    ///   ``SessionError/notAnonymous`` when it has a user already.
    public func bind(_ id: String, to user: String) async throws(SessionError) -> Session {
        try validate(id: id)
        try validate(user: user)
        let newID = SessionID.make(bucket: keyspace.bucket(ofUser: user))
        timers.forget(id)
        return try await instrumentation.run("bind", session: id) {
            let marked = try await redis.call(BindBeginFunction(sessionKey: keyspace.session(id), newID: newID))
            guard case .marked(let expiry, let lastSeen, let fields, let messages) = marked else {
                if case .notAnonymous = marked { throw SessionError.notAnonymous }
                throw SessionError.notFound
            }
            let record = SessionRecord(fields)
            let mode = try resolve(record[SessionKeyspace.Field.mode].flatMap(TimeoutMode.init(storedName:)) ?? configuration.defaultMode)
            let placed = try await redis.call(
                BindPlaceFunction(
                    sessionKey: keyspace.session(newID), user: user, oldID: id, timerExpiry: expiry, lastSeen: lastSeen,
                    retention: retention(for: mode), fields: fields, messages: messages))
            guard case .placed(let timer, let now) = placed else {
                if case .exists = placed { throw SessionError.corrupted("keys for a freshly generated id already exist") }
                throw SessionError.notFound
            }
            timers.remember(timer, for: newID, redisTime: now, keyspace: keyspace)
            _ = try await redis.call(BindFinishFunction(sessionKey: keyspace.session(id), newID: newID, eventsChannel: eventsChannel))
            var session = try record.session(id: newID, lastActivity: now, lastSeen: lastSeen)
            session.user = user
            return session
        }
    }
}
