import Foundation

/// A session lifecycle event, as the store's functions publish it on `<namespace>:events` (see
/// ``SessionStoreConfiguration/publishEvents``):
/// `{"at":1732185600000,"event":"created","session":"AAQx7Gk2p","user":"alice"}`.
///
/// Events never carry a whole session id: `session` is its first 9 characters (the bucket and 36
/// random bits), enough to correlate with logs, far too few to use.
public struct LifecycleEvent: Sendable, Hashable, Codable {
    /// What happened.
    public enum Kind: String, Sendable, Codable {
        case created, resumed, rotated, deleted, expired
    }

    /// What happened.
    public var event: Kind
    /// The first 9 characters of the session id.
    public var session: String
    /// The session's user ("" for an anonymous session).
    public var user: String
    /// When, in Unix milliseconds of Redis's clock.
    public var at: Int
    /// For `rotated`: the new id's first 9 characters. For `expired`: the reason
    /// (`idle_timeout`, `absolute_lifetime`).
    public var detail: String?

    /// An event (the store's functions publish them; public for observers' tests).
    public init(event: Kind, session: String, user: String, at: Int, detail: String? = nil) {
        self.event = event
        self.session = session
        self.user = user
        self.at = at
        self.detail = detail
    }

    /// Parses a published event.
    public init?(json: String) {
        guard let event = try? JSONDecoder().decode(LifecycleEvent.self, from: Data(json.utf8)) else { return nil }
        self = event
    }
}
