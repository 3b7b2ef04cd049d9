import CHiredis
import NIOCore
import Testing

@testable import HiredisNIO

@Suite("Command encoder")
struct CommandEncoderTests {
    /// hiredis's own formatter: the reference the encoder must match byte for byte.
    private func hiredisFormat(_ arguments: [[UInt8]]) -> [UInt8] {
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        let copies = arguments.map { bytes -> UnsafeMutablePointer<CChar> in
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBytes {
                UnsafeMutableRawPointer(copy).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(copy), byteCount: bytes.count)
            }
            return copy
        }
        defer { copies.forEach { $0.deallocate() } }
        for (copy, bytes) in zip(copies, arguments) {
            pointers.append(UnsafePointer(copy))
            lengths.append(bytes.count)
        }
        var output: UnsafeMutablePointer<CChar>? = nil
        let length = redisFormatCommandArgv(&output, Int32(arguments.count), &pointers, &lengths)
        defer { redisFreeCommand(output) }
        return Array(UnsafeRawBufferPointer(start: output, count: Int(length)))
    }

    private func encoded(_ command: RESPCommand) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        CommandEncoder.encode(command, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test func everyKindOfArgumentIsEncodedAsHiredisDoes() {
        let binary: [UInt8] = [0, 13, 10, 255, 36, 42]
        let long = String(repeating: "é", count: 40_000)
        var slice = ByteBufferAllocator().buffer(string: "--buffer--")
        slice.moveReaderIndex(forwardBy: 2)
        let command = RESPCommand(
            "SET",
            arguments: [
                .string(""), .string("ключ:{tag}"), .bytes(binary), .bytes([]), .buffer(slice),
                .integer(0), .integer(7), .integer(-1), .integer(1_234_567_890), .integer(.max), .integer(.min), .string(long),
            ])
        let reference = hiredisFormat([
            Array("SET".utf8), [], Array("ключ:{tag}".utf8), binary, [], Array("buffer--".utf8),
            Array("0".utf8), Array("7".utf8), Array("-1".utf8), Array("1234567890".utf8), Array(String(Int.max).utf8),
            Array(String(Int.min).utf8), Array(long.utf8),
        ])
        #expect(encoded(command) == reference)
    }

    @Test func commandsAppendToWhatTheBufferHolds() {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        CommandEncoder.encode(RESPCommand("PING"), into: &buffer)
        CommandEncoder.encode(RESPCommand("INCRBY", "n", .integer(-42)), into: &buffer)
        #expect(String(buffer: buffer) == "*1\r\n$4\r\nPING\r\n*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$3\r\n-42\r\n")
    }
}

extension CommandEncoderTests {
    @Test func aLongPipelineIsEncodedWhole() {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        var expected = ""
        for index in 0..<50_000 {
            CommandEncoder.encode(RESPCommand("ECHO", .string("r\(index)")), into: &buffer)
            expected += "*2\r\n$4\r\nECHO\r\n$\("r\(index)".utf8.count)\r\nr\(index)\r\n"
        }
        #expect(String(buffer: buffer) == expected)
    }
}
