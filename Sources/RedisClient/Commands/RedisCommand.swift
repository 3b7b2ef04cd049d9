import NIOCore

/// One argument of a command: binary safe.
public enum RedisArgument: Sendable, Hashable {
    case string(String)
    case bytes([UInt8])
    case buffer(ByteBuffer)
    case integer(Int)

    func append(to storage: inout [UInt8]) {
        switch self {
        case .string(let text): storage.append(contentsOf: text.utf8)
        case .bytes(let bytes): storage.append(contentsOf: bytes)
        case .buffer(let buffer): storage.append(contentsOf: buffer.readableBytesView)
        case .integer(let value): storage.append(contentsOf: String(value).utf8)
        }
    }

    var sizeHint: Int {
        switch self {
        case .string(let text): return text.utf8.count
        case .bytes(let bytes): return bytes.count
        case .buffer(let buffer): return buffer.readableBytes
        case .integer: return 20
        }
    }
}

extension RedisArgument: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }
}

/// A Redis command and its arguments, for example `RedisCommand("SET", "key", "value")`.
public struct RedisCommand: Sendable, Hashable {
    /// The command name followed by its arguments.
    public var arguments: [RedisArgument]

    /// A command from its name and arguments.
    public init(_ name: String, _ arguments: RedisArgument...) {
        self.arguments = [.string(name)] + arguments
    }

    /// A command from its name and an argument array.
    public init(_ name: String, arguments: [RedisArgument]) {
        self.arguments = [.string(name)] + arguments
    }

    /// The command's name, as sent (for logs and metrics).
    public var name: String {
        if case .string(let name) = arguments.first { return name }
        return "?"
    }

    var encodedSizeHint: Int { arguments.reduce(0) { $0 + $1.sizeHint } }
}
