#if Hummingbird
    import Foundation
    import Hummingbird
    import NIOConcurrencyHelpers
    import SessionCache

    /// A request context that carries the request's session (see ``SessionCacheMiddleware``).
    ///
    /// ```swift
    /// struct AppContext: SessionCacheRequestContext {
    ///     var coreContext: CoreRequestContextStorage
    ///     let session = WebSession()
    ///     init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
    /// }
    /// ```
    public protocol SessionCacheRequestContext: RequestContext {
        /// The request's session; a reference, shared by the middleware and the handlers.
        var session: WebSession { get }
    }

    /// The simplest context with a session.
    public struct BasicSessionCacheRequestContext: SessionCacheRequestContext {
        public var coreContext: CoreRequestContextStorage
        public let session = WebSession()

        public init(source: ApplicationRequestContextSource) {
            coreContext = .init(source: source)
        }
    }

    /// One request's session: what ``SessionCacheMiddleware`` loaded from the cookie (and slid, in the
    /// same round trip), and what the handler does with it.
    ///
    /// Log-in, rotation and destruction happen at once (the handler may need the new id); metadata
    /// changes made with ``set(_:_:)`` are written after the handler, in one call and only for the
    /// fields whose values changed. The cookie is set or cleared by the middleware.
    public final class WebSession: Sendable {
        private struct State: Sendable {
            var store: SessionStore?
            var current: Session?
            var lease: LockLease?
            var pending: [String: JSONValue] = [:]
            /// The cookie must change: a new id, or cleared (nil).
            var cookieChanged = false
        }

        private let state = NIOLockedValueBox(State())

        public init() {}

        /// The session, when the request has one.
        public var current: Session? { state.withLockedValue { $0.current } }
        /// Its user (nil for none, or an anonymous session).
        public var user: String? { current?.user }
        /// Its id, for store calls (`appendTurn`, `recentMessages`, ...).
        public var id: String? { current?.id }
        /// The per-request lock's lease, when the middleware takes one: pass it to the store's writes
        /// so that a holder that lost its lease cannot write. Nil after ``logIn(user:metadata:mode:)``
        /// or ``rotate()`` gave the session a new id (no other request can know that id yet).
        public var lease: LockLease? { state.withLockedValue { $0.lease } }

        /// A metadata value: the change this request made, else the loaded one.
        public subscript(key: String) -> JSONValue? {
            state.withLockedValue { $0.pending[key] ?? $0.current?.metadata[key] }
        }

        /// Changes a metadata value; written after the handler, if it differs from the loaded one.
        public func set(_ key: String, _ value: JSONValue) {
            state.withLockedValue { $0.pending[key] = value }
        }

        /// A metadata value decoded as `type` (nil when there is none).
        ///
        /// ```swift
        /// struct Cart: Codable { var items: [String] }
        /// let cart = try context.session.get("cart", as: Cart.self)
        /// ```
        ///
        /// - Throws: `DecodingError` when the stored value is not a `T`.
        public func get<T: Decodable>(_ key: String, as type: T.Type) throws -> T? {
            guard let value = self[key], value != .null else { return nil }
            return try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
        }

        /// Changes a metadata value to `value`, encoded as JSON; written after the handler.
        ///
        /// ```swift
        /// try context.session.set("cart", encoding: Cart(items: ["apple"]))
        /// ```
        public func set<T: Encodable>(_ key: String, encoding value: T) throws {
            set(key, try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value)))
        }

        /// Removes a metadata value; written after the handler.
        public func remove(_ key: String) {
            set(key, .null)
        }

        /// Logs `user` in: an anonymous session is bound to the user (its data moves to a new id);
        /// the same user's session keeps its data under a new id; another user's session ends and
        /// a new one starts; without a session one is created. The id changes in every case,
        /// against session fixation.
        @discardableResult
        public func logIn(user: String, metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil) async throws -> Session {
            let (store, current) = try loaded()
            var session: Session
            if let current, current.user == nil || current.user == user {
                session = try await current.user == nil ? store.bind(current.id, to: user) : store.rotate(current.id)
                if !metadata.isEmpty {
                    try await store.setMetadata(session.id, metadata)
                    session.metadata.merge(metadata) { _, new in new }
                }
            } else {
                if let current { try await store.delete(current.id) }
                session = try await store.create(user: user, metadata: metadata, mode: mode)
            }
            replace(with: session)
            return session
        }

        /// Starts an anonymous session when the request has none; returns the session.
        @discardableResult
        public func startAnonymous(metadata: [String: JSONValue] = [:], mode: TimeoutMode? = nil) async throws -> Session {
            let (store, current) = try loaded()
            if let current { return current }
            let session = try await store.createAnonymous(metadata: metadata, mode: mode)
            replace(with: session)
            return session
        }

        /// Gives the session a new id (after a privilege change); the old one stops working at once.
        public func rotate() async throws {
            let (store, current) = try loaded()
            guard let current else { return }
            replace(with: try await store.rotate(current.id))
        }

        /// Ends every session of this session's user, this one included (log out everywhere), and
        /// clears the cookie; returns how many ended. Nothing happens for an anonymous session.
        @discardableResult
        public func logOutEverywhere() async throws -> Int {
            let (store, current) = try loaded()
            guard let user = current?.user else { return 0 }
            let ended = try await store.deleteAll(user: user)
            clear()
            return ended
        }

        /// Ends the user's other sessions (other devices and browsers) and keeps this one; returns
        /// how many ended. A session the user starts meanwhile may escape it.
        @discardableResult
        public func logOutOthers() async throws -> Int {
            let (store, current) = try loaded()
            guard let current, let user = current.user else { return 0 }
            var ended = 0
            let limit = store.configuration.limits.maxSessionsPerUser ?? store.configuration.limits.maxListScan
            for other in try await store.list(user: user, limit: limit) where other.id != current.id {
                if try await store.delete(other.id) { ended += 1 }
            }
            return ended
        }

        /// The user's sessions as devices ("where you are signed in"), this one marked
        /// `isCurrent`: handles, no ids, so the list can go to the page as it is. Empty without a
        /// user.
        ///
        /// ```swift
        /// router.get("/devices") { _, context in try await context.session.devices() }  // DeviceSession is Codable
        /// ```
        public func devices(limit: Int = 50) async throws -> [DeviceSession] {
            let (store, current) = try loaded()
            guard let current, let user = current.user else { return [] }
            return try await store.devices(user: user, current: current.id, limit: limit)
        }

        /// Ends the user's session that `handle` names (from ``devices(limit:)``): only a session of
        /// this session's user. Returns whether one ended.
        @discardableResult
        public func endSession(handle: String) async throws -> Bool {
            let (store, current) = try loaded()
            guard let user = current?.user else { return false }
            return try await store.endSession(handle: handle, user: user)
        }

        /// Labels this session's device for ``devices(limit:)`` ("Firefox on Linux"); nil removes it.
        public func setDevice(_ label: String?) async throws {
            let (store, current) = try loaded()
            guard let current else { throw SessionError.notFound }
            try await store.setDevice(current.id, label: label)
        }

        /// Ends the session (its cleanup hook runs) and clears the cookie.
        public func destroy() async throws {
            let (store, current) = try loaded()
            guard let current else { return }
            try await store.delete(current.id)
            clear()
        }

        private func clear() {
            state.withLockedValue { state in
                state.current = nil
                state.pending = [:]
                state.lease = nil
                state.cookieChanged = true
            }
        }

        // MARK: For the middleware

        func load(store: SessionStore, session: Session?, cookieChanged: Bool) {
            state.withLockedValue { state in
                state.store = store
                state.current = session
                state.cookieChanged = cookieChanged
            }
        }

        /// The session as read again under the request's lock.
        func reload(_ session: Session) {
            state.withLockedValue { $0.current = session }
        }

        func setLease(_ lease: LockLease?) {
            state.withLockedValue { $0.lease = lease }
        }

        /// The metadata changes to write: only values that differ from the loaded ones.
        var changes: [String: JSONValue] {
            state.withLockedValue { state in state.pending.filter { state.current?.metadata[$0.key] != $0.value } }
        }

        var cookieChanged: Bool { state.withLockedValue { $0.cookieChanged } }

        private func loaded() throws -> (SessionStore, Session?) {
            try state.withLockedValue { state in
                guard let store = state.store else {
                    throw HTTPError(.internalServerError, message: "no SessionCacheMiddleware on this route")
                }
                return (store, state.current)
            }
        }

        private func replace(with session: Session) {
            state.withLockedValue { state in
                // Changes not yet written carry over to the new id. The lease names the old id;
                // the new one is this request's alone (only its response will carry it), so its
                // writes need no fence.
                if state.current?.id != session.id { state.lease = nil }
                state.current = session
                state.cookieChanged = true
            }
        }
    }
#endif  // Hummingbird
