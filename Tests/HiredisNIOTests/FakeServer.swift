import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP server on loopback that answers each chunk it reads with what `reply` says, to test the
/// client against misbehaving peers. `reply(connection, chunk)` returns the bytes to send, or nil
/// to stay silent.
final class FakeServer: Sendable {
    let port: Int
    private let channel: any Channel

    init(reply: @escaping @Sendable (_ connection: Int, _ chunk: Int) -> String?) async throws {
        let connections = NIOLockedValueBox(0)
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { child in
                let index = connections.withLockedValue { value in
                    value += 1
                    return value
                }
                return child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(Responder(connection: index, reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        port = channel.localAddress?.port ?? 0
    }

    func close() async {
        try? await channel.close()
    }

    private final class Responder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let connection: Int
        let reply: @Sendable (Int, Int) -> String?
        var chunk = 0

        init(connection: Int, reply: @escaping @Sendable (Int, Int) -> String?) {
            self.connection = connection
            self.reply = reply
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            chunk += 1
            if let text = reply(connection, chunk) {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
            }
        }
    }
}
