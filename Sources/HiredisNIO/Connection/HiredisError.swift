/// An error reply from Redis, split into its code (the first word) and message.
public struct HiredisServerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error code Redis puts first: `ERR`, `WRONGTYPE`, `NOSCRIPT`, `OOM`, `NOAUTH`,
    /// `WRONGPASS`, `READONLY`, `BUSY`, `LOADING`, `MOVED`, `ASK`, ... or a script's own code.
    public let code: String
    /// The whole reply text, code included.
    public let message: String

    /// Splits an error reply's text into code and message.
    public init(reply: String) {
        self.message = reply
        let first = reply.prefix { $0 != " " }
        self.code = first.isEmpty ? "ERR" : String(first)
    }

    public var description: String { message }

    /// Replies by which Redis refused a command without running it, for a reason that passes by
    /// itself: a server still loading its data set (`LOADING`), busy with a script (`BUSY`), a
    /// replica that lost its primary (`MASTERDOWN`), a cluster slot in migration (`TRYAGAIN`) or
    /// a cluster that is down (`CLUSTERDOWN`). The client waits with back-off and retries these
    /// within the command's timeout.
    public var isTransient: Bool {
        switch code {
        case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN": return true
        default: return false
        }
    }
}

/// Everything the Redis client throws: one error type with a ``code`` to switch on, a message
/// for people, and what is known about whether the command ran.
///
/// ```swift
/// do {
///     try await client.set("key", to: "value")
/// } catch let error as HiredisError where error.code == .timedOut {
///     // the write may or may not have happened: error.commandMayHaveRun is true
/// }
/// ```
///
/// Messages never contain passwords (URLs are redacted) nor command arguments.
public struct HiredisError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a value to compare with: `error.code == .connectionLost`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String {
            case cannotConnect, connectionLost, timedOut, server, protocolError, unexpectedReply
            case invalidConfiguration, clientClosed, overloaded, tooManyRedirections, tlsFailure, replyTooLarge, crossSlot
            case untrustedRedirection
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No connection could be made within the connect timeout (refused, unreachable, timed
        /// out, or the handshake failed for a reason other than an error reply).
        public static let cannotConnect = Code(.cannotConnect)
        /// The connection closed (or was found dead) while the command was queued or in flight.
        public static let connectionLost = Code(.connectionLost)
        /// The command got no reply within its timeout. Its reply, if it comes, is discarded.
        public static let timedOut = Code(.timedOut)
        /// Redis answered with an error reply (``HiredisError/serverError``).
        public static let server = Code(.server)
        /// The server sent bytes that are not RESP; the connection was dropped.
        public static let protocolError = Code(.protocolError)
        /// The reply had a shape the caller did not expect (``HiredisError/reply``).
        public static let unexpectedReply = Code(.unexpectedReply)
        /// The configuration or URL is not usable.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The client was closed or its `run()` ended.
        public static let clientClosed = Code(.clientClosed)
        /// Too many commands wait on the connection
        /// (``HiredisConfiguration/maximumPendingCommands``); the command was not sent.
        public static let overloaded = Code(.overloaded)
        /// A cluster kept redirecting the command (`MOVED`/`ASK`) past the configured bound.
        public static let tooManyRedirections = Code(.tooManyRedirections)
        /// The TLS handshake failed (an untrusted certificate, a wrong server name, ...).
        public static let tlsFailure = Code(.tlsFailure)
        /// A reply passed one of the ``ReplyLimits`` while it arrived; the connection was dropped.
        public static let replyTooLarge = Code(.replyTooLarge)
        /// On a cluster, a transaction's commands name keys of more than one hash slot: nothing
        /// was sent (use a hash tag, `{user}:a` and `{user}:b`, to keep keys in one slot).
        public static let crossSlot = Code(.crossSlot)
        /// A cluster redirected a command (`MOVED`/`ASK`) to a node its own topology does not name,
        /// also when read again from a known node: nothing was sent there (no connection, no
        /// credentials).
        public static let untrustedRedirection = Code(.untrustedRedirection)

        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A description for people (no credentials, no command arguments).
    public let message: String
    /// The error reply, when ``code`` is ``Code/server``.
    public let serverError: HiredisServerError?
    /// The unexpected reply, when ``code`` is ``Code/unexpectedReply``.
    public let reply: RESPReply?
    /// The error underneath (a NIO or TLS error), when there is one.
    public let underlying: (any Error & Sendable)?
    /// False when the command certainly did not run (it was never written, or Redis refused it
    /// before running it); true when it may have (the reply was lost or late). A checker of
    /// outcomes counts the first as failed and the second as indeterminate.
    public let commandMayHaveRun: Bool

    /// An error; most code uses the static constructors below.
    public init(
        code: Code, message: String, serverError: HiredisServerError? = nil, reply: RESPReply? = nil,
        underlying: (any Error & Sendable)? = nil, commandMayHaveRun: Bool
    ) {
        self.code = code
        self.message = message
        self.serverError = serverError
        self.reply = reply
        self.underlying = underlying
        self.commandMayHaveRun = commandMayHaveRun
    }

    /// The same error, marked as possibly applied: a part of a split pipeline failed while
    /// other parts ran.
    func mayHaveRun() -> HiredisError {
        HiredisError(
            code: code, message: message, serverError: serverError, reply: reply, underlying: underlying,
            commandMayHaveRun: true)
    }

    /// The Redis error code, when this is an error reply.
    public var serverCode: String? { serverError?.code }

    public var description: String { message }

    // MARK: Constructors

    /// See ``Code/cannotConnect``.
    public static func cannotConnect(address: String, reason: String, underlying: (any Error & Sendable)? = nil) -> HiredisError {
        HiredisError(
            code: .cannotConnect, message: "cannot connect to Redis at \(address): \(reason)", underlying: underlying,
            commandMayHaveRun: false)
    }

    /// See ``Code/connectionLost``; `written` tells whether the command had been written.
    public static func connectionLost(reason: String, written: Bool = true) -> HiredisError {
        HiredisError(code: .connectionLost, message: "connection to Redis lost: \(reason)", commandMayHaveRun: written)
    }

    /// See ``Code/timedOut``.
    public static func timedOut(after: Duration, written: Bool = true) -> HiredisError {
        HiredisError(code: .timedOut, message: "Redis command timed out after \(after)", commandMayHaveRun: written)
    }

    /// See ``Code/server``. Transient refusals (``HiredisServerError/isTransient``) and
    /// redirections did not run the command.
    public static func server(_ error: HiredisServerError) -> HiredisError {
        let refused = error.isTransient || ["MOVED", "ASK", "NOAUTH", "WRONGPASS", "NOPERM", "READONLY"].contains(error.code)
        return HiredisError(code: .server, message: "Redis error: \(error.message)", serverError: error, commandMayHaveRun: !refused)
    }

    /// See ``Code/protocolError``.
    public static func protocolError(_ text: String) -> HiredisError {
        HiredisError(code: .protocolError, message: "Redis protocol error: \(text)", commandMayHaveRun: true)
    }

    /// See ``Code/replyTooLarge``: `what` says which limit, never the reply's content.
    public static func replyTooLarge(_ what: String) -> HiredisError {
        HiredisError(code: .replyTooLarge, message: "Redis reply too large: \(what); the connection was dropped", commandMayHaveRun: true)
    }

    /// See ``Code/unexpectedReply``.
    public static func unexpectedReply(expected: String, got: RESPReply) -> HiredisError {
        HiredisError(
            code: .unexpectedReply, message: "unexpected Redis reply: expected \(expected), got \(got.shape)", reply: got,
            commandMayHaveRun: true)
    }

    /// See ``Code/crossSlot``.
    public static func crossSlot(slots: Int) -> HiredisError {
        HiredisError(
            code: .crossSlot, message: "a cluster transaction must keep its keys in one hash slot; these are in \(slots)",
            commandMayHaveRun: false)
    }

    /// See ``Code/untrustedRedirection``.
    public static var untrustedRedirection: HiredisError {
        HiredisError(
            code: .untrustedRedirection, message: "the cluster redirected a command to a node its topology does not name; not followed",
            commandMayHaveRun: false)
    }

    /// See ``Code/invalidConfiguration``.
    public static func invalidConfiguration(_ text: String) -> HiredisError {
        HiredisError(code: .invalidConfiguration, message: "invalid Redis configuration: \(text)", commandMayHaveRun: false)
    }

    /// See ``Code/clientClosed``.
    public static var clientClosed: HiredisError {
        HiredisError(code: .clientClosed, message: "the Redis client is closed", commandMayHaveRun: false)
    }

    /// See ``Code/overloaded``.
    public static func overloaded(pending: Int) -> HiredisError {
        HiredisError(
            code: .overloaded, message: "\(pending) commands already wait on the Redis connection; this one was not sent",
            commandMayHaveRun: false)
    }

    /// See ``Code/tooManyRedirections``.
    public static func tooManyRedirections(_ count: Int) -> HiredisError {
        HiredisError(
            code: .tooManyRedirections, message: "the cluster redirected the command \(count) times", commandMayHaveRun: false)
    }

    /// See ``Code/tlsFailure``.
    public static func tlsFailure(address: String, underlying: any Error & Sendable) -> HiredisError {
        HiredisError(
            code: .tlsFailure, message: "TLS handshake with \(address) failed: \(underlying)", underlying: underlying,
            commandMayHaveRun: false)
    }
}

extension RESPReply {
    /// The reply's type and size, without its content (which may be private data): what error
    /// messages and logs say of a reply. (A status reply of up to 16 characters, such as `OK`,
    /// is shown: Redis's own words, not data.)
    public var shape: String {
        switch self {
        case .simpleString(let text): return text.count <= 16 ? text : "a status reply"
        case .error: return "an error reply"
        case .integer: return "an integer"
        case .bulkString(let buffer): return "a bulk string of \(buffer.readableBytes) bytes"
        case .null: return "nil"
        case .array(let values): return "an array of \(values.count)"
        }
    }
}

extension HiredisError: Hashable {
    /// Equal when code, message, server error and `commandMayHaveRun` are: the underlying error
    /// (any `Error`) is not compared.
    public static func == (lhs: HiredisError, rhs: HiredisError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.serverError == rhs.serverError
            && lhs.commandMayHaveRun == rhs.commandMayHaveRun
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
        hasher.combine(serverError)
        hasher.combine(commandMayHaveRun)
    }
}
