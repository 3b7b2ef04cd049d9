import CHiredis
import NIOCore

/// Encodes commands into RESP with hiredis's `redisFormatCommandArgv` (binary-safe arguments).
enum CommandEncoder {
    /// Appends the RESP encoding of `command` to `buffer`.
    static func encode(_ command: RedisCommand, into buffer: inout ByteBuffer) {
        // hiredis wants one pointer per argument; lay every argument out in one array so
        // that all of them are pinned at once.
        var storage: [UInt8] = []
        storage.reserveCapacity(command.encodedSizeHint)
        var ends: [Int] = []
        ends.reserveCapacity(command.arguments.count)
        for argument in command.arguments {
            argument.append(to: &storage)
            ends.append(storage.count)
        }
        storage.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                .assumingMemoryBound(to: CChar.self)
            var pointers: [UnsafePointer<CChar>?] = []
            var lengths: [Int] = []
            pointers.reserveCapacity(ends.count)
            lengths.reserveCapacity(ends.count)
            var start = 0
            for end in ends {
                pointers.append(base + start)
                lengths.append(end - start)
                start = end
            }
            var output: UnsafeMutablePointer<CChar>? = nil
            let length = pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { argvlen in
                    redisFormatCommandArgv(&output, Int32(argv.count), argv.baseAddress, argvlen.baseAddress)
                }
            }
            // hiredis fails only when malloc does.
            guard length >= 0, let output else { fatalError("redisFormatCommandArgv: out of memory") }
            defer { redisFreeCommand(output) }
            buffer.writeBytes(UnsafeRawBufferPointer(start: output, count: Int(length)))
        }
    }
}
