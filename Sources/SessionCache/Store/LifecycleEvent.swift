import Foundation
import HiredisNIO

/// A session lifecycle event, as published on `<namespace>:events` (see
/// ``SessionStoreConfiguration/publishEvents``):
/// `{"event":"created","session":"<id>","user":"alice","at":1732185600000}`.
public struct LifecycleEvent: Sendable, Hashable, Codable {
    /// What happened.
    public enum Kind: String, Sendable, Codable {
        case created, resumed, rotated, deleted, expired
    }

    /// What happened.
    public var event: Kind
    /// The session id.
    public var session: String
    /// The session's user.
    public var user: String
    /// Unix milliseconds.
    public var at: Int
    /// For `rotated`: the new id. For `expired`: the reason.
    public var detail: String?

    /// An event (the store makes them; public for observers' tests).
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

    /// Built by hand: this is on the hot path of creates and expiries, and JSONEncoder costs more
    /// than the Redis round trip it rides on.
    var json: String {
        var text = "{\"at\":\(at)"
        if let detail { text += ",\"detail\":\(Self.quoted(detail))" }
        text += ",\"event\":\"\(event.rawValue)\",\"session\":\(Self.quoted(session)),\"user\":\(Self.quoted(user))}"
        return text
    }

    private static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

extension SessionStore {
    /// The PUBLISH of an event, to go along with an operation's round trip (none when disabled).
    func eventCommand(_ kind: LifecycleEvent.Kind, id: String, user: String, detail: String? = nil) -> [RESPCommand] {
        guard let json = eventJSON(kind, id: id, user: user, detail: detail) else { return [] }
        return [RESPCommand("PUBLISH", .string(keys.events), .string(json))]
    }

    /// An event's JSON, for scripts that publish it themselves (nil when disabled).
    func eventJSON(_ kind: LifecycleEvent.Kind, id: String, user: String, detail: String? = nil) -> String? {
        guard configuration.publishEvents else { return nil }
        return LifecycleEvent(event: kind, session: id, user: user, at: Self.nowMilliseconds(), detail: detail).json
    }
}
