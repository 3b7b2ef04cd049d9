import NIOCore

/// Encodes commands into RESP (an array of bulk strings: binary-safe arguments).
///
/// Written directly into the outbox's buffer: the request side of RESP is four fixed shapes, and
/// formatting it with hiredis's `redisFormatCommandArgv` (a heap copy per command, lengths through
/// `sprintf`) cost 9% of the client's CPU with 200 callers. hiredis still parses every reply; its
/// formatter is the reference of the encoder's unit test.
enum CommandEncoder {
    /// Appends the RESP encoding of `command` to `buffer`.
    ///
    /// In one write into the buffer's memory: each piece written through `ByteBuffer`'s own
    /// methods (five per argument) paid a capacity check and an exclusivity check of its storage.
    static func encode(_ command: RESPCommand, into buffer: inout ByteBuffer) {
        let arguments = command.arguments
        // Each argument adds at most "$" + 20 digits + 2 CRLF + 2 CRLF to its bytes.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 24 + command.encodedSizeHint + 25 * arguments.count) { target in
            var at = header(UInt8(ascii: "*"), arguments.count, into: target, at: 0)
            for argument in arguments {
                switch argument {
                case .string(let text):
                    at = header(UInt8(ascii: "$"), text.utf8.count, into: target, at: at)
                    if let copied = text.utf8.withContiguousStorageIfAvailable({ copy(UnsafeRawBufferPointer($0), into: target, at: at) }) {
                        at = copied
                    } else {
                        for byte in text.utf8 {
                            target[at] = byte
                            at += 1
                        }
                    }
                case .bytes(let bytes):
                    at = header(UInt8(ascii: "$"), bytes.count, into: target, at: at)
                    at = bytes.withUnsafeBytes { copy($0, into: target, at: at) }
                case .buffer(let bytes):
                    at = header(UInt8(ascii: "$"), bytes.readableBytes, into: target, at: at)
                    at = bytes.withUnsafeReadableBytes { copy($0, into: target, at: at) }
                case .integer(let value):
                    let digits = DecimalDigits(value)
                    at = header(UInt8(ascii: "$"), digits.count, into: target, at: at)
                    at += digits.copy(to: target, at: at)
                }
                target[at] = UInt8(ascii: "\r")
                target[at + 1] = UInt8(ascii: "\n")
                at += 2
            }
            return at
        }
    }

    /// Writes `marker`, `count` in decimal and CRLF at `offset`; returns the offset after them.
    private static func header(_ marker: UInt8, _ count: Int, into target: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        let digits = DecimalDigits(count)
        target[offset] = marker
        let end = offset + 1 + digits.copy(to: target, at: offset + 1)
        target[end] = UInt8(ascii: "\r")
        target[end + 1] = UInt8(ascii: "\n")
        return end + 2
    }

    /// Copies `bytes` to `target` at `offset`; returns the offset after them.
    private static func copy(_ bytes: UnsafeRawBufferPointer, into target: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        if bytes.isEmpty { return offset }
        UnsafeMutableRawBufferPointer(rebasing: target[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
        return offset + bytes.count
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
