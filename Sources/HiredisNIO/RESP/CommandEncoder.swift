import NIOCore

/// Encodes commands into RESP (an array of bulk strings: binary-safe arguments).
///
/// Written directly into the outbox's buffer: the request side of RESP is four fixed shapes, and
/// formatting it with hiredis's `redisFormatCommandArgv` (a heap copy per command, lengths through
/// `sprintf`) cost 9% of the client's CPU with 200 callers. hiredis still parses every reply; its
/// formatter is the reference of the encoder's unit test.
enum CommandEncoder {
    /// Appends the RESP encoding of `command` to `buffer`.
    static func encode(_ command: RESPCommand, into buffer: inout ByteBuffer) {
        let arguments = command.arguments
        // Each argument adds at most "$" + 20 digits + 2 CRLF to its bytes.
        buffer.reserveCapacity(minimumWritableBytes: 24 + command.encodedSizeHint + 25 * arguments.count)
        writeHeader(UInt8(ascii: "*"), arguments.count, into: &buffer)
        for argument in arguments {
            switch argument {
            case .string(let text):
                writeHeader(UInt8(ascii: "$"), text.utf8.count, into: &buffer)
                buffer.writeString(text)
            case .bytes(let bytes):
                writeHeader(UInt8(ascii: "$"), bytes.count, into: &buffer)
                buffer.writeBytes(bytes)
            case .buffer(let bytes):
                writeHeader(UInt8(ascii: "$"), bytes.readableBytes, into: &buffer)
                buffer.writeImmutableBuffer(bytes)
            case .integer(let value):
                let digits = DecimalDigits(value)
                writeHeader(UInt8(ascii: "$"), digits.count, into: &buffer)
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 20) { digits.copy(to: $0, at: 0) }
            }
            buffer.writeInteger(UInt16(0x0D0A))  // CRLF, big-endian
        }
    }

    /// Writes `marker`, `count` in decimal and CRLF.
    private static func writeHeader(_ marker: UInt8, _ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 23) { target in
            let digits = DecimalDigits(count)
            target[0] = marker
            let offset = 1 + digits.copy(to: target, at: 1)
            target[offset] = UInt8(ascii: "\r")
            target[offset + 1] = UInt8(ascii: "\n")
            return offset + 2
        }
    }
}

/// The decimal digits of an integer (sign included), built without allocating.
private struct DecimalDigits {
    /// Digits right-aligned in 20 bytes (enough for Int.min's 19 digits and its sign).
    private var storage: (UInt64, UInt64, UInt64) = (0, 0, 0)
    private(set) var count = 0

    init(_ value: Int) {
        var magnitude = value.magnitude
        withUnsafeMutableBytes(of: &storage) { bytes in
            var index = 20
            repeat {
                index -= 1
                bytes[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                index -= 1
                bytes[index] = UInt8(ascii: "-")
            }
            count = 20 - index
        }
    }

    /// Copies the digits to `target` at `offset`; returns their count.
    func copy(to target: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        withUnsafeBytes(of: storage) { bytes in
            UnsafeMutableRawBufferPointer(rebasing: target[offset..<(offset + count)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[(20 - count)..<20]))
        }
        return count
    }
}
