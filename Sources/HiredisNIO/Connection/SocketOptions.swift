import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension ChannelOptions {
    #if os(Linux)
        /// Seconds a connection is idle before TCP sends its first keepalive probe.
        static let tcpKeepaliveIdle = Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: TCP_KEEPIDLE)
    #else
        static let tcpKeepaliveIdle = Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: TCP_KEEPALIVE)
    #endif
    /// Seconds between keepalive probes.
    static let tcpKeepaliveInterval = Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: TCP_KEEPINTVL)
    /// Unanswered probes after which the kernel drops the connection.
    static let tcpKeepaliveCount = Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: TCP_KEEPCNT)
}
