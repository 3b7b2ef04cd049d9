import SessionCache

// What the chat's API answers, the same from both servers (each adds its framework's response
// conformance).

/// One line of the conversation.
public struct ChatMessage: Codable, Sendable {
    public var role: String
    public var content: String
}

/// `GET /api/state`: who is signed in, the mode, the time left by Redis's count, the messages.
public struct ChatState: Codable, Sendable {
    public var instance: String
    public var user: String?
    public var mode: String?
    public var secondsLeft: Double?
    public var warning: Bool
    public var messages: [ChatMessage]

    /// The state of a request without a session.
    public init(instance: String) {
        self.instance = instance
        self.warning = false
        self.messages = []
    }

    /// The state of `session`, read with `SessionStore.get` (whose `timeLeft` is Redis's count:
    /// no app server's clock decides the warning).
    public init(instance: String, session: Session, messages: [SessionMessage], warning: Duration) {
        let left = session.timeLeft.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 } ?? 0
        self.instance = instance
        self.user = session.user
        self.mode = session.mode.storedName
        self.secondsLeft = left
        self.warning = left <= Double(warning.components.seconds)
        self.messages = messages.map { ChatMessage(role: $0.role, content: $0.content) }
    }
}

/// `GET /api/conversations`: the user's sessions, one line each.
public struct ChatConversations: Codable, Sendable {
    public var list: [String]

    public init(_ summaries: [SessionSummary]) {
        list = summaries.map { "\($0.state), \($0.messageCount) messages: \($0.preview ?? "")" }
    }
}

/// The modes a user can pick: "short" is the demo's idle timeout, the others the store's.
public func timeoutMode(named name: String, short: Duration) -> TimeoutMode {
    switch name {
    case "standard": return .standard
    case "lenient": return .lenient
    default: return .custom(short)
    }
}
