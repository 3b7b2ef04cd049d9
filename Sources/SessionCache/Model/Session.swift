import Foundation
import HiredisNIO

/// Where a session is in its life.
public enum SessionState: String, Sendable, Codable, CaseIterable {
    /// Created, no activity yet.
    case created
    /// In use.
    case active
    /// Picked up again after being idle longer than the resume threshold.
    case resumed
    /// Its idle timeout or absolute lifetime ran out; its cleanup hook has not run yet.
    case expired
    /// Deleted explicitly; its cleanup hook has not run yet (stores with
    /// ``SessionStoreConfiguration/expiryListener``).
    case deleted
    /// Its cleanup hook ran and its keys are gone.
    case cleanedUp = "cleaned_up"
}

/// How long a session may stay idle before it expires.
public enum TimeoutMode: Sendable, Hashable, Codable {
    /// 5 minutes: kiosks, sensitive back offices.
    case aggressive
    /// 30 minutes: the default for web and chat.
    case standard
    /// 4 hours: long-running work sessions.
    case lenient
    /// 24 hours: "remember me" style conversations.
    case persistent
    /// Any idle timeout.
    case custom(Duration)

    /// The idle timeout this mode gives.
    public var idleTimeout: Duration {
        switch self {
        case .aggressive: return .seconds(5 * 60)
        case .standard: return .seconds(30 * 60)
        case .lenient: return .seconds(4 * 3600)
        case .persistent: return .seconds(24 * 3600)
        case .custom(let duration): return duration
        }
    }

    /// The name stored in Redis: `aggressive`, `standard`, `lenient`, `persistent` or
    /// `custom:<milliseconds>`.
    public var storedName: String {
        switch self {
        case .aggressive: return "aggressive"
        case .standard: return "standard"
        case .lenient: return "lenient"
        case .persistent: return "persistent"
        case .custom(let duration): return "custom:\(duration.wholeMilliseconds)"
        }
    }

    /// A mode from its stored name (as in ``storedName``); nil for anything else.
    public init?(storedName: String) {
        switch storedName {
        case "aggressive": self = .aggressive
        case "standard": self = .standard
        case "lenient": self = .lenient
        case "persistent": self = .persistent
        default:
            guard storedName.hasPrefix("custom:"), let ms = Int(storedName.dropFirst(7)), ms > 0 else { return nil }
            self = .custom(.milliseconds(ms))
        }
    }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let mode = TimeoutMode(storedName: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown timeout mode \(name)"))
        }
        self = mode
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(storedName)
    }
}

/// One message of a conversation.
public struct SessionMessage: Sendable, Hashable, Codable {
    /// Who spoke: `user`, `assistant`, `system`, `tool`, ... (one word, at most 32 bytes).
    public var role: String
    /// What was said.
    public var content: String
    /// When: the store stamps every appended message with Redis's clock (the value given to
    /// ``SessionStore/appendMessages(_:_:lease:)`` is not sent).
    public var at: Date

    /// A message; `at` defaults to now.
    public init(role: String, content: String, at: Date = Date()) {
        self.role = role
        self.content = content
        self.at = at
    }
}

/// A session as the store returns it.
public struct Session: Sendable, Hashable, Codable {
    /// The id: its bucket and 144 random bits, URL-safe base64 (27 characters). A bearer secret:
    /// never log it whole.
    public var id: String
    /// The user it belongs to; nil for an anonymous session (see ``SessionStore/createAnonymous(metadata:mode:agentType:)``).
    public var user: String?
    /// Its lifecycle state.
    public var state: SessionState
    /// When the session was created.
    public var createdAt: Date
    /// The last meaningful activity (touches, messages, writes, resume); heartbeats do not count.
    /// Redis's clock. Within the last idle timeout before the absolute deadline, touches do not
    /// move it (the deadline caps the timer, which is how touches are recorded).
    public var lastActivity: Date
    /// The last heartbeat, if any (Redis's clock).
    public var lastSeen: Date?
    /// Its timeout mode (the idle timeout).
    public var mode: TimeoutMode
    /// The absolute deadline that no activity extends.
    public var absoluteDeadline: Date
    /// Messages appended since creation or the last clear.
    public var messageCount: Int
    /// The kind of agent serving it, if the application set one.
    public var agentType: String?
    /// Incremented by every write to the session's data.
    public var version: Int
    /// The application's metadata.
    public var metadata: [String: JSONValue]
    /// How long the session had left when ``SessionStore/get(_:)`` read it, as Redis counted (its
    /// idle timer, capped by the absolute deadline): what a page's "ends in" shows, with no app
    /// server's clock involved. Nil where the store did not measure it.
    public var timeLeft: Duration? = nil

    /// The idle timeout.
    public var idleTimeout: Duration { mode.idleTimeout }
    /// Whether the session has no user yet.
    public var isAnonymous: Bool { user == nil }
}

/// What ``SessionStore/resume(_:user:)`` finds.
public enum ResumeResult: Sendable, Hashable {
    /// The session is alive and belongs to the user; its TTLs were refreshed. `state` is
    /// ``SessionState/active``, or ``SessionState/resumed`` when it had been idle longer than the
    /// resume threshold; `inactiveFor` is how long it had been idle.
    case resumed(Session, inactiveFor: Duration)
    /// Unknown, expired, or another user's: the caller starts fresh. (Deliberately one case, so
    /// that a caller cannot tell another user's session from a missing one.)
    case notFound
}

/// A line of a user's session list.
public struct SessionSummary: Sendable, Hashable, Codable {
    /// The session id.
    public var id: String
    /// The kind of agent serving it, if set.
    public var agentType: String?
    /// The start of the last message (at most 60 bytes).
    public var preview: String?
    /// The last activity.
    public var updatedAt: Date
    /// Messages appended since creation or the last clear.
    public var messageCount: Int
    /// Its lifecycle state.
    public var state: SessionState
}

/// One of a user's sessions as the user may see it, in a list of their devices: no id, only the
/// ``handle`` that ends it (``SessionStore/devices(user:current:limit:)``). `Codable`, to send to
/// the page as it is.
public struct DeviceSession: Sendable, Hashable, Codable {
    /// Names the session to end it (``SessionStore/endSession(handle:user:)``) without being its
    /// id: safe to show in a page (the id is a bearer secret; the handle cannot act as the session
    /// and does not give the id back).
    public var handle: String
    /// The label the application gave the device (``SessionStore/setDevice(_:label:)``).
    public var device: String?
    /// When the session was created (Redis's clock).
    public var createdAt: Date
    /// Its last activity (Redis's clock).
    public var lastActivity: Date
    /// Whether this is the session of the request that asked.
    public var isCurrent: Bool
}

/// Store-wide figures.
public struct SessionStats: Sendable, Hashable, Codable {
    /// Sessions alive or awaiting their expiry hook.
    public var activeSessions: Int
    /// Users with at least one session in the last absolute lifetime.
    public var users: Int
    /// `activeSessions / users`.
    public var sessionsPerUser: Double
    /// Sessions that ended (deleted or cleaned up after expiry).
    public var endedSessions: Int
    /// Mean lifetime of ended sessions, in seconds.
    public var averageSessionDurationSeconds: Double
}

/// What counts as activity for ``SessionStore/touch(_:activity:)``.
public enum SessionActivity: Sendable {
    /// Meaningful activity (a message, a click): slides the idle expiry.
    case meaningful
    /// A heartbeat: records liveness (``Session/lastSeen``) without extending the session.
    case heartbeat
}
