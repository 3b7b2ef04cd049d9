import CHiredis
import NIOCore

/// Encodes commands into RESP with hiredis's `redisFormatCommandArgv` (binary-safe arguments).
enum CommandEncoder {
    /// Appends the RESP encoding of `command` to `buffer`.
    static func encode(_ command: RESPCommand, into buffer: inout ByteBuffer) {
        let arguments = command.arguments
        let count = arguments.count
        // hiredis wants one pointer per argument: lay every argument out in one stack buffer so
        // that all of them are pinned at once, with no heap allocation on this hot path.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, command.encodedSizeHint)) { storage in
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: count) { pointers in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: count) { lengths in
                    let base = UnsafeRawPointer(storage.baseAddress!)
                    var offset = 0
                    for index in 0..<count {
                        let written = arguments[index].write(into: UnsafeMutableBufferPointer(rebasing: storage[offset...]))
                        pointers[index] = (base + offset).assumingMemoryBound(to: CChar.self)
                        lengths[index] = written
                        offset += written
                    }
                    var output: UnsafeMutablePointer<CChar>? = nil
                    let length = redisFormatCommandArgv(&output, Int32(count), pointers.baseAddress, lengths.baseAddress)
                    // hiredis fails only when malloc does.
                    guard length >= 0, let output else { fatalError("redisFormatCommandArgv: out of memory") }
                    buffer.writeBytes(UnsafeRawBufferPointer(start: output, count: Int(length)))
                    redisFreeCommand(output)
                }
            }
        }
    }
}
