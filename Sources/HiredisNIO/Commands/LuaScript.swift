/// A Lua script as a value: its source and the SHA-1 Redis knows it by.
///
/// ``HiredisClient/run(_:keys:arguments:)`` sends `EVALSHA` and, when Redis answers `NOSCRIPT`
/// (after `SCRIPT FLUSH`, a restart or a failover), loads the script and runs it again.
public struct LuaScript: Sendable, Hashable {
    /// The Lua source.
    public let source: String
    /// The script's SHA-1, lowercase hex.
    public let sha1: String

    /// A script from its Lua source.
    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hex(source.utf8)
    }
}
