/// How a web integration answers a store or lock error: one mapping for Hummingbird and Vapor.
///
/// A server fault (Redis unreachable, a reply not understood, a configuration the store refused)
/// answers with a fixed text and is logged by the integration: its description never reaches the
/// client. Bad input answers `400`, a limit `413`, a busy or superseded lock `409`, a session that
/// ended `401`, Redis trouble `503` (nobody is logged out because Redis hiccuped). No answer
/// quotes the error: the integration logs it.
package struct WebAnswer: Sendable, Hashable {
    /// The HTTP status code.
    package var status: Int
    /// What the client is told.
    package var message: String
    /// Whether the server is at fault: log the error (the client gets only ``message``).
    package var isServerFault: Bool { status >= 500 }

    static let unavailable = WebAnswer(status: 503, message: "sessions are unavailable, try again")
    static let ended = WebAnswer(status: 401, message: "the session ended")
    static let busy = WebAnswer(status: 409, message: "the session is busy, try again")
    // Fixed texts: the errors' descriptions quote their input (a key, a role), which is the
    // client's own and is not echoed back.
    static let badInput = WebAnswer(status: 400, message: "invalid session input")
}

extension WebAnswer {
    /// The answer to a store or lock error; nil for any other error (the framework answers it).
    package init?(_ error: any Error) {
        switch error {
        case let error as SessionError: self = error.webAnswer
        case let error as LockError: self = error.webAnswer
        default: return nil
        }
    }
}

extension SessionError {
    /// The answer to a request that met this error.
    package var webAnswer: WebAnswer {
        switch self {
        case .redis, .notReplicated, .corrupted, .unsupportedServer: return .unavailable
        case .invalidConfiguration: return WebAnswer(status: 500, message: "sessions are misconfigured")
        case .notFound: return .ended
        case .staleLease, .bindingInProgress: return .busy
        case .metadataValueTooLarge, .tooManyMetadataKeys, .messageTooLarge, .tooManyMessages, .sessionTooLarge:
            return WebAnswer(status: 413, message: "the session data is too large")
        case .invalidID, .invalidMetadataKey, .invalidUser, .invalidRole, .invalidAgentType, .invalidTab, .notAnonymous,
            .invalidTimeoutMode, .invalidDeviceLabel, .invalidHandle:
            return .badInput
        }
    }
}

extension LockError {
    /// The answer to a request that met this error.
    package var webAnswer: WebAnswer {
        switch self {
        case .redis, .notReplicated: return .unavailable
        case .notFound: return .ended
        case .timedOut, .leaseLost: return .busy
        case .invalidTab: return .badInput
        case .store(let error): return error.webAnswer
        }
    }
}
