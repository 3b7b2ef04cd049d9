import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import Vapor

/// Vapor's sessions (`app.sessions`) on ``SessionStore``: Redis hashes with native TTLs that
/// slide on every request, expiry hooks and locks from the same store.
///
/// ```swift
/// app.sessions.use { _ in SessionCacheDriver(store: store) }
/// app.sessions.configuration = SessionCacheDriver.cookieConfiguration()  // HttpOnly, Secure, SameSite=Lax
/// app.middleware.use(app.sessions.middleware)
/// ```
///
/// - Reading a session resumes it (alive check and TTL slide in one round trip). A malformed,
///   unknown or ended cookie never throws: the request gets a fresh session.
/// - Writing sends only the keys that changed since the read, in one call; when nothing changed
///   (a request that only read the session) nothing is written: the read already slid the TTL.
/// - Values are Vapor's strings, stored as the session's metadata (one hash field each, visible
///   with `redis-cli HGETALL`). A value under ``userKey`` (Vapor's `SessionAuthenticatable` uses
///   `_<Type>Session`) can name the session's user at creation.
public struct SessionCacheDriver: AsyncSessionDriver {
    let store: SessionStore
    /// The data key whose value becomes the session's user when a session is created.
    public let userKey: String?

    public init(store: SessionStore, userKey: String? = nil) {
        self.store = store
        self.userKey = userKey
    }

    public func createSession(_ data: SessionData, for request: Request) async throws -> SessionID {
        let metadata = data.snapshot.mapValues { JSONValue.string($0) }
        // (Vapor has a `Session` type too: the store's is left to inference here.)
        let id =
            if let userKey, let user = data[userKey] {
                try await store.create(user: user, metadata: metadata).id
            } else {
                try await store.createAnonymous(metadata: metadata).id
            }
        request.storage[LoadedSession.self] = data.snapshot
        return SessionID(string: id)
    }

    public func readSession(_ sessionID: SessionID, for request: Request) async throws -> SessionData? {
        // Not one of ours (malformed): a fresh session, no error.
        guard store.isWellFormed(sessionID.string) else { return nil }
        guard case .resumed(let session, _) = try await store.resume(sessionID.string) else { return nil }
        let values = session.metadata.compactMapValues { value -> String? in
            if case .string(let text) = value { return text }
            return nil
        }
        request.storage[LoadedSession.self] = values
        return SessionData(initialData: values)
    }

    public func updateSession(_ sessionID: SessionID, to data: SessionData, for request: Request) async throws -> SessionID {
        let before = request.storage[LoadedSession.self] ?? [:]
        let after = data.snapshot
        var changes: [String: JSONValue] = [:]
        for (key, value) in after where before[key] != value { changes[key] = .string(value) }
        for key in before.keys where after[key] == nil { changes[key] = .null }
        guard !changes.isEmpty else { return sessionID }
        do {
            try await store.setMetadata(sessionID.string, changes)
        } catch {
            // It ended meanwhile: the data goes to a fresh session.
            guard error == .notFound else { throw error }
            return try await createSession(data, for: request)
        }
        request.storage[LoadedSession.self] = after
        return sessionID
    }

    public func deleteSession(_ sessionID: SessionID, for request: Request) async throws {
        guard store.isWellFormed(sessionID.string) else { return }  // nothing of ours to delete
        try await store.delete(sessionID.string)
    }

    /// Vapor's session cookie with safe attributes: `HttpOnly`, `Secure` (unless `secure` is
    /// false, for plain-HTTP development), `SameSite=Lax`, path `/`, and a `Max-Age`.
    public static func cookieConfiguration(
        name: String = "session", secure: Bool = true, maxAge: Duration = .seconds(12 * 3600)
    ) -> SessionsConfiguration {
        SessionsConfiguration(cookieName: name) { id in
            HTTPCookies.Value(
                string: id.string, maxAge: Int(maxAge.components.seconds), path: "/", isSecure: secure, isHTTPOnly: true,
                sameSite: .lax)
        }
    }

    /// The session data as read, to write only what changed.
    struct LoadedSession: StorageKey {
        typealias Value = [String: String]
    }
}

/// Runs an ``ExpiryListener`` for the lifetime of a Vapor application: started when the app has
/// booted, stopped (its running hooks finish, its claims are finalized) when it shuts down.
///
/// ```swift
/// app.lifecycle.use(ExpiryListenerLifecycle(ExpiryListener(store: store) { expired in ... }))
/// ```
public final class ExpiryListenerLifecycle: LifecycleHandler {
    private let listener: ExpiryListener
    private let running = NIOLockedValueBox<Task<Void, any Error>?>(nil)

    public init(_ listener: ExpiryListener) {
        self.listener = listener
    }

    public func didBootAsync(_ application: Application) async throws {
        let listener = self.listener
        running.withLockedValue { $0 = Task { try await listener.run() } }
    }

    public func shutdownAsync(_ application: Application) async {
        guard let task = running.withLockedValue({ $0 }) else { return }
        task.cancel()
        _ = await task.result
    }
}
