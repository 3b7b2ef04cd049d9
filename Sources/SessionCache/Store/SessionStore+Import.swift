import Foundation
import HiredisNIO

/// A session carried over from another session system, so that switching to this store logs
/// nobody out (``SessionStore/importSession(_:)``).
///
/// The two formats Swift servers most often store in Redis have an initializer each, written
/// against their code: vapor/redis's `RedisSessionsDriver` (key `vrs-<id>`, a JSON object of
/// strings, no TTL) and hummingbird-auth's `SessionStorage` over a Redis or Valkey persist driver
/// (key `hbs.<id>`, the app's `Codable` session as JSON, with a TTL).
///
/// ```swift
/// let value = try await client.send(RESPCommand("GET", "vrs-\(id)")).string!
/// if let former = ImportedSession(vaporRedisKey: "vrs-\(id)", value: value, remaining: nil, userKey: "_UserSession") {
///     _ = try await store.importSession(former)
/// }
/// ```
public struct ImportedSession: Sendable, Hashable {
    /// The id the other system gave out: the value of the cookie browsers still present.
    public var formerID: String
    /// The session's user, nil for an anonymous one.
    public var user: String?
    /// The session's data, as the store's metadata.
    public var metadata: [String: JSONValue]
    /// How long the session had left in the other system; nil when it had no limit there (the
    /// mode's absolute lifetime then applies).
    public var remaining: Duration?
    /// The timeout mode; nil for the store's default.
    public var mode: TimeoutMode?

    public init(
        formerID: String, user: String? = nil, metadata: [String: JSONValue] = [:], remaining: Duration? = nil, mode: TimeoutMode? = nil
    ) {
        self.formerID = formerID
        self.user = user
        self.metadata = metadata
        self.remaining = remaining
        self.mode = mode
    }

    /// A session written by vapor/redis's default `RedisSessionsDelegate`: the key is `vrs-<id>`
    /// and the value Vapor's `SessionData` as JSON, an object of strings. Every entry becomes a
    /// metadata string (as the Vapor driver stores them); the value under `userKey`
    /// (Vapor's `SessionAuthenticator` writes `_<User>Session`) is the user, too. Nil for a key or
    /// value in another format.
    ///
    /// - Parameters:
    ///   - key: the Redis key, `vrs-<id>`.
    ///   - value: its value.
    ///   - remaining: the key's TTL; nil for none (vapor/redis sets none).
    ///   - userKey: the data key whose value is the user.
    public init?(vaporRedisKey key: String, value: String, remaining: Duration?, userKey: String? = nil) {
        guard key.hasPrefix("vrs-"), case .object(let fields)? = JSONValue(parsing: value) else { return nil }
        var metadata: [String: JSONValue] = [:]
        for (name, field) in fields {
            guard case .string = field else { return nil }
            metadata[name] = field
        }
        var user: String?
        if let userKey, case .string(let name)? = fields[userKey] { user = name }
        self.init(formerID: String(key.dropFirst(4)), user: user, metadata: metadata, remaining: remaining)
    }

    /// A session written by hummingbird-auth's `SessionStorage` through a Redis or Valkey
    /// `PersistDriver`: the key is `hbs.<id>` and the value the app's session type as JSON. An
    /// object's members become metadata; any other value is kept whole under the metadata key
    /// `session`. The member `userField` (a string or an integer), when given, is the user. Nil for
    /// a key or value in another format.
    ///
    /// - Parameters:
    ///   - key: the Redis key, `hbs.<id>`.
    ///   - value: its value.
    ///   - remaining: the key's TTL (the persist driver sets `expiresIn`); nil for none.
    ///   - userField: the member whose value is the user.
    public init?(hummingbirdAuthKey key: String, value: String, remaining: Duration?, userField: String? = nil) {
        guard key.hasPrefix("hbs."), let parsed = JSONValue(parsing: value) else { return nil }
        var user: String?
        let metadata: [String: JSONValue]
        if case .object(let fields) = parsed {
            metadata = fields
            if let userField {
                switch fields[userField] {
                case .string(let name)?: user = name
                case .number(let number)? where number == number.rounded() && abs(number) < 1e15: user = String(Int64(number))
                default: break
                }
            }
        } else {
            metadata = ["session": parsed]
        }
        self.init(formerID: String(key.dropFirst(4)), user: user, metadata: metadata, remaining: remaining)
    }

    /// Whether `id` can be a former id: 1 to 256 characters of base64 (either alphabet) and `.`,
    /// `~`. Both formats' ids are 44 characters of base64. Anything else is refused before it
    /// reaches a key name (a `{` would choose the Cluster slot, a `:` would mimic other keys).
    public static func isValidFormerID(_ id: String) -> Bool {
        let bytes = id.utf8
        guard (1...256).contains(bytes.count) else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                return true
            default: return false
            }
        }
    }
}

/// What ``SessionStore/importSession(_:)`` did.
public enum ImportResult: Sendable, Hashable {
    /// A new session, to be handed out the first time a request presents the former id.
    case imported(Session)
    /// The former id was imported before (and not yet redeemed): nothing was created.
    case alreadyImported
    /// It had no time left: nothing was created.
    case expired
}

extension SessionStore {
    /// Brings one session of another session system into the store, with the time it had left,
    /// under a new id that nobody has seen yet; ``redeemImported(_:)`` hands it out to the first
    /// request that presents the former id (the integrations do this when configured to).
    ///
    /// Three steps on two keys (which may live on two Cluster nodes): the former id is reserved
    /// (`<ns>:{c}:imported:<former id>` set to `pending` if absent), the session is created, and
    /// the reservation then names it, for as long as the new session can live untouched. A former
    /// id imported before, or already handed out, is taken: nothing is created for it (so running
    /// the import again neither duplicates a session nor brings a used cookie back). A process
    /// that dies between the steps leaves a reservation or a session that expire by themselves.
    ///
    /// - Throws: ``SessionError/invalidID`` for a former id that ``ImportedSession/isValidFormerID(_:)``
    ///   refuses; the errors of ``create(user:metadata:mode:agentType:)``.
    public func importSession(_ former: ImportedSession) async throws(SessionError) -> ImportResult {
        guard ImportedSession.isValidFormerID(former.formerID) else { throw .invalidID }
        if let remaining = former.remaining, remaining < .milliseconds(1) { return .expired }
        if let user = former.user { try Self.validate(user: user) }
        let pointer = keyspace.importedSession(formerID: former.formerID)
        let reserved = try await instrumentation.run("import") {
            try await redis.execute(SET(pointer, "pending", onlyIfAbsent: true, expiresIn: .seconds(60)))
        }
        guard reserved else { return .alreadyImported }
        let session: Session
        do throws(SessionError) {
            let bucket = former.user.map { keyspace.bucket(ofUser: $0) } ?? Int.random(in: 0..<keyspace.bucketCount)
            session = try await create(
                user: former.user, bucket: bucket, metadata: former.metadata, mode: former.mode, agentType: nil,
                lifetimeCap: former.remaining)
        } catch {
            // Refused (a limit, a metadata key): free the former id for a corrected run.
            _ = try? await redis.send(RESPCommand("DEL", .string(pointer)))
            throw error
        }
        // The pointer lasts as long as the session can without a request: its idle timeout, or
        // less when its absolute deadline comes first (both times Redis's).
        let lifetime = session.absoluteDeadline.timeIntervalSince(session.createdAt)
        let untouched = min(session.idleTimeout, .milliseconds(max(1, Int(lifetime * 1000))))
        _ = try await instrumentation.run("import", session: session.id) {
            try await redis.execute(SET(pointer, .string(session.id), expiresIn: untouched, onlyIfPresent: true))
        }
        return .imported(session)
    }

    /// The session imported under `formerID` (its timer slid, as ``resume(_:)`` does), handed out
    /// once: to the first request that presents the former id, and to those within
    /// ``SessionStoreConfiguration/importedSessionGrace`` of it (tabs restored together, a retry
    /// after a lost response), which get the same session;
    /// later requests, and a former id never imported, get nil. The caller gives the client the
    /// session's new id (a cookie): the session continues under an id no earlier response
    /// carried, which is a rotation.
    ///
    /// The spent former id is remembered for the longest absolute lifetime of any mode, so that
    /// running the import again does not bring it back; remove the other system's keys once the
    /// switch is done.
    ///
    /// - Throws: ``SessionError/invalidID`` for a value that cannot be a former id.
    public func redeemImported(_ formerID: String) async throws(SessionError) -> Session? {
        guard ImportedSession.isValidFormerID(formerID) else { throw .invalidID }
        let function = ImportRedeemFunction(
            pointerKey: keyspace.importedSession(formerID: formerID), grace: configuration.importedSessionGrace,
            spentLifetime: configuration.absoluteLifetimes.longest)
        let taken = try await instrumentation.run("redeem") { try await redis.call(function) }
        guard let id = taken else { return nil }
        guard isWellFormed(id) else { throw .corrupted("an imported-session pointer names no session id") }
        guard case .resumed(let session, _) = try await resume(id) else { return nil }
        return session
    }
}
