import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import HiredisNIO

@Suite("Channel handler")
struct ChannelHandlerTests {
    /// After a read that resumed several callers, a caller on the loop must not write its next
    /// command alone: the others' commands follow within the same loop turn and go out with it.
    /// After a read that resumed one caller it writes at once (a lone caller's round trip).
    @Test func writesAtOnceOnlyAfterAReadThatResumedOneCaller() throws {
        let outbox = CommandOutbox()
        let handler = HiredisChannelHandler(outbox: outbox, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        /// `count` callers, each sending a pipeline of `commands` PINGs.
        func send(_ count: Int, commands: Int = 1) throws {
            for _ in 0..<count {
                let entry = PendingCommand(
                    id: outbox.makeID(), deadline: .now() + .seconds(10), timeout: .seconds(10), remaining: commands, collected: [],
                    promise: .abandoned)
                _ = outbox.append(entry) { for _ in 0..<commands { $0.writeString("*1\r\n$4\r\nPING\r\n") } }
            }
            handler.flushOutbox()
            _ = try channel.readOutbound(as: ByteBuffer.self)
        }

        #expect(handler.writesAtOnce)
        try send(3)
        try channel.writeInbound(ByteBuffer(string: "+PONG\r\n+PONG\r\n+PONG\r\n"))
        #expect(!handler.writesAtOnce)
        try send(1)
        try channel.writeInbound(ByteBuffer(string: "+PONG\r\n"))
        #expect(handler.writesAtOnce)
        // One caller's pipeline of two (a lock acquire: SET and TIME) resumes one caller.
        try send(1, commands: 2)
        try channel.writeInbound(ByteBuffer(string: "+OK\r\n+PONG\r\n"))
        #expect(handler.writesAtOnce)
    }
}
