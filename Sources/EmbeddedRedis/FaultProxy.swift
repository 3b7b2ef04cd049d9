import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP proxy on 127.0.0.1 in front of a server, for network faults without root: pass traffic,
/// delay it, blackhole it (the connections stay open but no byte gets through, as when a network
/// drops packets without a reset), or close every connection.
///
/// ```swift
/// let proxy = try await FaultProxy.start(forwardingTo: server.port)
/// var configuration = server.configuration
/// configuration.port = proxy.port
/// proxy.mode = .blackhole  // commands now time out; the client must notice the dead connection
/// ```
public final class FaultProxy: Sendable {
    /// What happens to the bytes.
    public enum Mode: Sendable, Equatable {
        case pass
        /// Every chunk is held this long before it goes on.
        case delay(Duration)
        /// No byte gets through, in either direction; connections stay open. As with a network
        /// that drops packets, TCP would deliver them once the path is back: the bytes are held
        /// and go on, in order, when the mode changes (unless the connection was closed first).
        case blackhole
    }

    private struct State {
        var mode: Mode = .pass
        var isolatedSources: Set<String> = []
        var connections: [ObjectIdentifier: any Channel] = [:]
        var forwarders: [ObjectIdentifier: Forwarder] = [:]
    }

    private let channel: any Channel
    private let state = NIOLockedValueBox(State())

    /// The port clients connect to.
    public let port: Int

    /// What the proxy does now; takes effect for the next chunk on every connection.
    public var mode: Mode {
        get { state.withLockedValue { $0.mode } }
        set { change { $0.mode = newValue } }
    }

    /// Source addresses (`"127.0.0.3"`) cut off whatever the mode: their connections are
    /// blackholed in both directions until the address leaves the set. With a node bound to an
    /// address of its own, this is the node's side of a network partition.
    public var isolatedSources: Set<String> {
        get { state.withLockedValue { $0.isolatedSources } }
        set { change { $0.isolatedSources = newValue } }
    }

    /// Adds `source` to ``isolatedSources`` or removes it, in one step (concurrent changes of
    /// different sources do not undo each other).
    public func setIsolated(_ source: String, _ isolated: Bool) {
        change { state in
            if isolated { state.isolatedSources.insert(source) } else { state.isolatedSources.remove(source) }
        }
    }

    /// Applies `body` to the state, then lets every connection send what it held if its bytes may
    /// pass now.
    private func change(_ body: (inout State) -> Void) {
        let forwarders = state.withLockedValue { state in
            body(&state)
            return Array(state.forwarders.values)
        }
        for forwarder in forwarders { forwarder.release() }
    }

    /// What happens now to the bytes of a connection from `source`.
    fileprivate func mode(forSource source: String?) -> Mode {
        state.withLockedValue { state in
            if let source, state.isolatedSources.contains(source) { return .blackhole }
            return state.mode
        }
    }

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    /// Starts a proxy on a free loopback port that forwards to `127.0.0.1:targetPort`.
    public static func start(
        forwardingTo targetPort: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    )
        async throws -> FaultProxy
    {
        let box = NIOLockedValueBox<FaultProxy?>(nil)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                inbound.setOption(.autoRead, value: false).flatMap {
                    ClientBootstrap(group: inbound.eventLoop).connect(host: "127.0.0.1", port: targetPort)
                }.flatMap { outbound in
                    guard let proxy = box.withLockedValue({ $0 }) else { return inbound.close() }
                    proxy.register(inbound)
                    proxy.register(outbound)
                    let source = inbound.remoteAddress?.ipAddress
                    let toServer = Forwarder(proxy: proxy, partner: outbound, loop: inbound.eventLoop, source: source)
                    let toClient = Forwarder(proxy: proxy, partner: inbound, loop: outbound.eventLoop, source: source)
                    proxy.track(toServer, closing: inbound)
                    proxy.track(toClient, closing: outbound)
                    return inbound.pipeline.addHandler(toServer).flatMap {
                        outbound.pipeline.addHandler(toClient)
                    }.flatMap {
                        inbound.setOption(.autoRead, value: true)
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let proxy = FaultProxy(channel: server, port: server.localAddress?.port ?? 0)
        box.withLockedValue { $0 = proxy }
        return proxy
    }

    /// Closes every connection at once (as a restarted middlebox would); new ones are accepted.
    public func closeConnections() {
        let connections = state.withLockedValue { state in
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for connection in connections { connection.close(promise: nil) }
    }

    /// Stops listening and closes every connection.
    public func stop() async {
        try? await channel.close()
        let connections = state.withLockedValue { Array($0.connections.values) }
        for connection in connections { try? await connection.close() }
    }

    private func register(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLockedValue { $0.connections[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLockedValue { _ = $0.connections.removeValue(forKey: id) }
        }
    }

    private func track(_ forwarder: Forwarder, closing channel: any Channel) {
        let id = ObjectIdentifier(forwarder)
        state.withLockedValue { $0.forwarders[id] = forwarder }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.state.withLockedValue { _ = $0.forwarders.removeValue(forKey: id) }
        }
    }

    /// Copies what one side reads to the other, as the mode says; closes the partner with it.
    /// Everything but ``release()`` runs on `loop`, which release hops to.
    private final class Forwarder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let proxy: FaultProxy
        let partner: any Channel
        let loop: any EventLoop
        /// The address the client side of the connection came from.
        let source: String?
        /// Bytes read during a blackhole, in order.
        private var held: [ByteBuffer] = []

        init(proxy: FaultProxy, partner: any Channel, loop: any EventLoop, source: String?) {
            self.proxy = proxy
            self.partner = partner
            self.loop = loop
            self.source = source
        }

        /// Sends what was held, if the blackhole has ended for this connection.
        func release() {
            loop.execute {
                guard self.proxy.mode(forSource: self.source) != .blackhole else { return }
                for bytes in self.held { self.partner.write(bytes, promise: nil) }
                self.held = []
                self.partner.flush()
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            switch proxy.mode(forSource: source) {
            case .pass:
                for earlier in held { partner.write(earlier, promise: nil) }
                held = []
                partner.writeAndFlush(bytes, promise: nil)
            case .delay(let duration):
                let partner = self.partner
                context.eventLoop.scheduleTask(
                    in: .nanoseconds(Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
                ) {
                    partner.writeAndFlush(bytes, promise: nil)
                }
            case .blackhole:
                held.append(bytes)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
