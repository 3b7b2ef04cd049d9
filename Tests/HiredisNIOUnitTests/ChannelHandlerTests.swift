import Logging
import NIOConcurrencyHelpers
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

    /// A caller's PING through the outbox; `then` runs right after it is handed to the handler,
    /// on this task (an EmbeddedChannel is not thread-safe), before its reply is awaited.
    private func send(
        _ outbox: CommandOutbox, _ handler: HiredisChannelHandler, _ channel: EmbeddedChannel, then: () throws -> Void = {}
    ) async -> Result<RESPReply, any Error> {
        do {
            let reply = try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RESPReply, any Error>) in
                let entry = PendingCommand(
                    id: outbox.makeID(), deadline: .now() + .seconds(10), timeout: .seconds(10), remaining: 1, collected: [],
                    promise: .single(continuation))
                switch outbox.append(entry, encode: { $0.writeString("*1\r\n$4\r\nPING\r\n") }) {
                case .closed(let error):
                    continuation.resume(throwing: error)
                default:
                    handler.flushOutbox()
                    _ = try? channel.readOutbound(as: ByteBuffer.self)
                    try? then()
                }
            }
            return .success(reply)
        } catch {
            return .failure(error)
        }
    }

    private func makeChannel() throws -> (CommandOutbox, HiredisChannelHandler, EmbeddedChannel) {
        let outbox = CommandOutbox()
        let handler = HiredisChannelHandler(outbox: outbox, logger: Logger(label: "test"))
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 6379)).wait()
        return (outbox, handler, channel)
    }

    @Test func anActiveConnectionAnswersItsCaller() async throws {
        let (outbox, handler, channel) = try makeChannel()
        defer { _ = try? channel.finish() }
        let reply = await send(outbox, handler, channel) { try channel.writeInbound(ByteBuffer(string: "+PONG\r\n")) }
        #expect((try? reply.get())?.string == "PONG")
        #expect(channel.isActive)
    }

    @Test func aProtocolErrorClosesTheChannelAndEveryLaterCallerGetsTheSameError() async throws {
        let (outbox, handler, channel) = try makeChannel()
        defer { _ = try? channel.finish() }
        // A reply type the client refuses: the connection is dropped.
        let waiting = await send(outbox, handler, channel) { try channel.writeInbound(ByteBuffer(string: "?what\r\n")) }
        guard case .failure(let first as HiredisError) = waiting else {
            Issue.record("the waiting caller fails")
            return
        }
        #expect(first.code == .protocolError)
        #expect(!channel.isActive, "the handler closed the channel")
        guard case .failure(let later as HiredisError) = await send(outbox, handler, channel) else {
            Issue.record("a later caller fails at once")
            return
        }
        #expect(later.code == .protocolError && later.message == first.message, "one closed error, the first")
    }

    @Test func thePeerClosingFailsWrittenCommandsAsMayHaveRun() async throws {
        let (outbox, handler, channel) = try makeChannel()
        let waiting = await send(outbox, handler, channel) { channel.pipeline.fireChannelInactive() }
        guard case .failure(let error as HiredisError) = waiting else {
            Issue.record("the written command fails")
            return
        }
        #expect(error.code == .connectionLost && error.commandMayHaveRun)
        _ = try? channel.finish()
    }

    @Test func inSubscriberModeEveryReplyGoesToTheSink() async throws {
        let (_, handler, channel) = try makeChannel()
        defer { _ = try? channel.finish() }
        let received = NIOLockedValueBox<[String]>([])
        handler.enterSubscriberMode { reply in received.withLockedValue { $0.append(reply.array?.last?.string ?? "?") } }
        // No command waits: without the sink these would be unsolicited (a protocol error).
        try channel.writeInbound(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nm1\r\n"))
        try channel.writeInbound(ByteBuffer(string: "*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nm2\r\n"))
        #expect(received.withLockedValue { $0 } == ["m1", "m2"])
        #expect(channel.isActive)
    }

    @Test func anUnsolicitedReplyOutsideSubscriberModeClosesTheConnection() throws {
        let (_, _, channel) = try makeChannel()
        defer { _ = try? channel.finish() }
        try? channel.writeInbound(ByteBuffer(string: "+surprise\r\n"))
        #expect(!channel.isActive)
    }
}
