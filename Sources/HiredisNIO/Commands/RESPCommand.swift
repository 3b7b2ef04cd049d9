import NIOCore

/// One argument of a command: binary safe.
public enum RESPArgument: Sendable, Hashable {
    case string(String)
    case bytes([UInt8])
    case buffer(ByteBuffer)
    case integer(Int)

    /// Copies the argument's bytes to the start of `target` (at least ``sizeHint`` long) and
    /// returns how many it wrote.
    func write(into target: UnsafeMutableBufferPointer<UInt8>) -> Int {
        switch self {
        case .string(var text):
            return text.withUTF8 {
                UnsafeMutableRawBufferPointer(target).copyBytes(from: $0); return $0.count
            }
        case .bytes(let bytes):
            return bytes.withUnsafeBufferPointer {
                UnsafeMutableRawBufferPointer(target).copyBytes(from: $0); return $0.count
            }
        case .buffer(let buffer):
            return buffer.withUnsafeReadableBytes {
                UnsafeMutableRawBufferPointer(target).copyBytes(from: $0); return $0.count
            }
        case .integer(let value):
            // Decimal digits, written backwards from the end of a 20-byte scratch.
            var magnitude = value.magnitude
            var digits: [UInt8] = []
            repeat {
                digits.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
                magnitude /= 10
            } while magnitude > 0
            if value < 0 { digits.append(UInt8(ascii: "-")) }
            for (index, digit) in digits.reversed().enumerated() { target[index] = digit }
            return digits.count
        }
    }

    var sizeHint: Int {
        switch self {
        case .string(let text): return text.utf8.count
        case .bytes(let bytes): return bytes.count
        case .buffer(let buffer): return buffer.readableBytes
        case .integer: return 21
        }
    }
}

extension RESPArgument: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .integer(value) }
}

/// A Redis command and its arguments, for example `RESPCommand("SET", "key", "value")`.
public struct RESPCommand: Sendable, Hashable {
    /// The command name followed by its arguments.
    public var arguments: [RESPArgument]

    /// A command from its name and arguments.
    public init(_ name: String, _ arguments: RESPArgument...) {
        self.arguments = [.string(name)] + arguments
    }

    /// A command from its name and an argument array.
    public init(_ name: String, arguments: [RESPArgument]) {
        self.arguments = [.string(name)] + arguments
    }

    /// The command's name, as sent (for logs and metrics).
    public var name: String {
        if case .string(let name) = arguments.first { return name }
        return "?"
    }

    var encodedSizeHint: Int { arguments.reduce(0) { $0 + $1.sizeHint } }
}
