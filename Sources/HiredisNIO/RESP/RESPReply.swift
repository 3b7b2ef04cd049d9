import NIOCore

/// A reply from Redis: every RESP2 type.
///
/// Bulk strings are binary safe (``bulkString(_:)`` holds raw bytes, NUL bytes included).
/// An error reply nested in an array (for example inside an `EXEC` result) stays a value;
/// a top-level error reply is thrown as ``HiredisError/server(_:)`` by the client.
public enum RESPReply: Sendable, Hashable {
    /// A status reply such as `OK` or `PONG`.
    case simpleString(String)
    /// An error reply, such as `WRONGTYPE Operation against a key holding the wrong kind of value`.
    case error(String)
    /// An integer reply.
    case integer(Int)
    /// A binary-safe bulk string.
    case bulkString(ByteBuffer)
    /// The nil bulk string or nil array.
    case null
    /// An array, possibly nested.
    case array([RESPReply])
}

extension RESPReply {
    /// The text of a bulk or simple string (UTF-8), or an integer's decimal text.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let buffer): return String(buffer: buffer)
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The raw bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let buffer): return Array(buffer.readableBytesView)
        case .simpleString(let text): return Array(text.utf8)
        default: return nil
        }
    }

    /// An integer reply, or a string reply that holds a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): return value
        case .bulkString(let buffer): return Int(String(buffer: buffer))
        case .simpleString(let text): return Int(text)
        default: return nil
        }
    }

    /// A bulk string holding a decimal floating-point number (as `ZSCORE` returns).
    public var double: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .bulkString, .simpleString: return string.flatMap(Double.init)
        default: return nil
        }
    }

    /// The elements of an array reply.
    public var array: [RESPReply]? {
        if case .array(let values) = self { return values }
        return nil
    }

    /// Whether this is the nil reply.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RESPReply: CustomStringConvertible {
    /// A short human-readable rendering, as redis-cli would show it.
    public var description: String {
        switch self {
        case .simpleString(let text): return text
        case .error(let text): return "(error) \(text)"
        case .integer(let value): return "(integer) \(value)"
        case .bulkString(let buffer):
            let bytes = buffer.readableBytesView
            if let text = String(validating: bytes, as: UTF8.self) { return "\"\(text)\"" }
            return "<\(bytes.count) bytes>"
        case .null: return "(nil)"
        case .array(let values): return "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

extension RESPReply {
    /// A RESP2 flat key-value array (`CLUSTER SHARDS`, `SENTINEL SENTINELS`, `FUNCTION LIST`
    /// entries) as a dictionary; empty for anything else.
    var fieldMap: [String: RESPReply] {
        guard let parts = array else { return [:] }
        var result: [String: RESPReply] = [:]
        var index = 0
        while index + 1 < parts.count {
            if let key = parts[index].string { result[key] = parts[index + 1] }
            index += 2
        }
        return result
    }
}
