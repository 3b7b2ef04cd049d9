import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP server on loopback that answers each chunk it reads with what `reply` says, to test the
/// client against misbehaving peers. `reply(connection, chunk)` returns the bytes to send, or nil
/// to stay silent. With `trickleEvery`, the answers after the first chunk (the handshake) go out
/// one byte at a time at that interval: a peer that keeps a connection looking alive while it
/// takes forever to finish a reply.
public final class FakeServer: Sendable {
    public let port: Int
    private let channel: any Channel

    public convenience init(
        trickleEvery: TimeAmount? = nil, reply: @escaping @Sendable (_ connection: Int, _ chunk: Int) -> String?
    )
        async throws
    {
        try await self.init(trickleEvery: trickleEvery, answering: { connection, chunk, _ in reply(connection, chunk) })
    }

    /// A server that answers by what it read: `answering(connection, chunk, text)`, where `text` is
    /// the chunk's bytes as UTF-8 (commands arrive whole in one chunk on loopback).
    public init(
        trickleEvery: TimeAmount? = nil, answering reply: @escaping @Sendable (_ connection: Int, _ chunk: Int, _ text: String) -> String?
    ) async throws {
        let connections = NIOLockedValueBox(0)
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                let index = connections.withLockedValue { value in
                    value += 1
                    return value
                }
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(Responder(connection: index, trickleEvery: trickleEvery, reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = channel.localAddress?.port ?? 0
    }

    public func close() async {
        try? await channel.close()
    }

    /// The commands of a chunk of RESP requests, as their words (arguments are bulk strings).
    public static func commands(in text: String) -> [[String]] {
        var commands: [[String]] = []
        for line in text.split(separator: "\r\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("*") {
                commands.append([])
            } else if !line.hasPrefix("$"), !commands.isEmpty, !line.isEmpty {
                commands[commands.count - 1].append(String(line))
            }
        }
        return commands
    }

    private final class Responder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let connection: Int
        let trickleEvery: TimeAmount?
        let reply: @Sendable (Int, Int, String) -> String?
        var chunk = 0

        init(connection: Int, trickleEvery: TimeAmount?, reply: @escaping @Sendable (Int, Int, String) -> String?) {
            self.connection = connection
            self.trickleEvery = trickleEvery
            self.reply = reply
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            chunk += 1
            let request = String(buffer: unwrapInboundIn(data))
            guard let text = reply(connection, chunk, request) else { return }
            guard let interval = trickleEvery, chunk > 1 else {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
                return
            }
            let rest = NIOLoopBoundBox(ByteBuffer(string: text), eventLoop: context.eventLoop)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { task in
                let context = loopBound.value
                guard let byte = rest.value.readSlice(length: 1), context.channel.isActive else {
                    task.cancel()
                    return
                }
                context.writeAndFlush(NIOAny(byte), promise: nil)
            }
        }
    }
}
