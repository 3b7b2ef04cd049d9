/// An error reply from Redis, split into its code (the first word) and message.
public struct HiredisServerError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error code Redis puts first: `ERR`, `WRONGTYPE`, `NOSCRIPT`, `OOM`, `NOAUTH`,
    /// `WRONGPASS`, `READONLY`, `BUSY`, `LOADING`, ... or a script's own code.
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
}

/// Everything the Redis client throws.
///
/// The cases tell apart what a caller may want to handle differently: the server could not be
/// reached, the connection broke mid-command, the command ran out of time, Redis answered with
/// an error, the bytes on the wire were not RESP, or the reply had an unexpected shape.
public enum HiredisError: Error, Sendable, CustomStringConvertible {
    /// No connection could be made within the connect timeout (refused, unreachable, timed out,
    /// or the handshake failed for a reason other than an error reply).
    case cannotConnect(address: String, reason: String)
    /// The connection closed while the command was in flight or queued: the command may or may
    /// not have run.
    case connectionLost(reason: String)
    /// The command got no reply within its timeout. Its reply, if it comes, is discarded.
    case timedOut(after: Duration)
    /// Redis answered with an error reply.
    case server(HiredisServerError)
    /// The server sent bytes hiredis's reader rejects; the connection was dropped.
    case protocolError(String)
    /// The reply had a shape the caller did not expect.
    case unexpectedReply(expected: String, got: RESPReply)
    /// The configuration or URL is not usable.
    case invalidConfiguration(String)
    /// The client was closed.
    case clientClosed

    /// The Redis error code, when this is an error reply.
    public var serverCode: String? {
        if case .server(let error) = self { return error.code }
        return nil
    }

    public var description: String {
        switch self {
        case .cannotConnect(let address, let reason): return "cannot connect to Redis at \(address): \(reason)"
        case .connectionLost(let reason): return "connection to Redis lost: \(reason)"
        case .timedOut(let after): return "Redis command timed out after \(after)"
        case .server(let error): return "Redis error: \(error.message)"
        case .protocolError(let text): return "Redis protocol error: \(text)"
        case .unexpectedReply(let expected, let got): return "unexpected Redis reply: expected \(expected), got \(got)"
        case .invalidConfiguration(let text): return "invalid Redis configuration: \(text)"
        case .clientClosed: return "the Redis client is closed"
        }
    }
}
