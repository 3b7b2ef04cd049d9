import NIOCore
import Testing

@testable import HiredisNIO

@Suite("MOVED and ASK redirections")
struct RedirectionParsingTests {
    private func redirection(_ reply: String, from host: String = "10.0.0.7") -> Redirection? {
        Redirection(HiredisServerError(reply: reply), fallbackHost: host)
    }

    @Test func parsesMoved() {
        #expect(redirection("MOVED 3999 127.0.0.1:6381") == Redirection(kind: .moved, slot: 3999, address: "127.0.0.1:6381"))
    }

    @Test func parsesAsk() {
        #expect(redirection("ASK 3999 127.0.0.1:6381") == Redirection(kind: .ask, slot: 3999, address: "127.0.0.1:6381"))
    }

    @Test func emptyHostMeansTheHostTheReplyCameFrom() {
        // unknown-endpoint clusters redirect with an empty host: same host as the replying node, new port.
        #expect(redirection("MOVED 3999 :6381", from: "10.0.0.7") == Redirection(kind: .moved, slot: 3999, address: "10.0.0.7:6381"))
        #expect(redirection("ASK 0 :6382", from: "cache.internal") == Redirection(kind: .ask, slot: 0, address: "cache.internal:6382"))
    }

    @Test func hostnamesAndIPv6AddressesAreKept() {
        #expect(redirection("MOVED 16383 redis-2.internal:6381")?.address == "redis-2.internal:6381")
        // Redis writes IPv6 hosts unbracketed: the port is after the last colon.
        #expect(redirection("MOVED 3999 2001:db8::5:6381")?.address == "[2001:db8::5]:6381")
    }

    @Test func ipv6AddressStartingWithDoubleColonIsNotAnEmptyHost() {
        // "::1:6381" is host ::1, port 6381; only a lone leading colon means "no host".
        #expect(redirection("MOVED 3999 ::1:6381", from: "10.0.0.7")?.address == "[::1]:6381")
    }

    @Test func anUnknownHostnameLeavesTheAddressToTheTopology() {
        // "?" is what a node preferring hostnames sends when it has none. The port alone names
        // nothing: on a cluster whose nodes all listen on 6379, the replying host with that port is
        // the replying node itself, and following it would loop. The router asks the topology.
        #expect(redirection("MOVED 3999 ?:6379", from: "10.0.0.7") == Redirection(kind: .moved, slot: 3999, address: nil, port: 6379))
        #expect(redirection("ASK 3999 ?:6381", from: "10.0.0.7") == Redirection(kind: .ask, slot: 3999, address: nil, port: 6381))
    }

    @Test(arguments: [
        "ERR unknown command 'FOO'", "WRONGTYPE Operation against a key holding the wrong kind of value",
        "CLUSTERDOWN Hash slot not served", "TRYAGAIN Multiple keys request during rehashing of slot", "ERR bad thing",
        "MOVED", "MOVED 3999", "MOVED notaslot 127.0.0.1:6381", "MOVED 3999 127.0.0.1:notaport", "MOVED 3999 127.0.0.1:6381 extra",
        // A slot that does not exist names nothing (it would index the slot map).
        "MOVED 16384 ?:6379", "MOVED -1 ?:6379", "ASK 20000 127.0.0.1:6381",
    ])
    func otherErrorsAreNotRedirections(reply: String) {
        #expect(redirection(reply) == nil)
    }
}

// MARK: - Slot map

@Suite("Cluster slot map")
struct ClusterSlotMapTests {
    private let threeShards: [(ClosedRange<Int>, Int)] = [(0...5460, 30001), (5461...10922, 30002), (10923...16383, 30003)]

    @Test func emptyMapKnowsNothing() {
        let map = ClusterSlotMap()
        #expect(!map.isKnown)
        #expect(map.primaries.isEmpty)
        #expect(map.primary(forSlot: 0) == nil)
        #expect(map.primary(forSlot: 16383) == nil)
    }

    @Test func applyMapsEverySlotToItsPrimary() throws {
        var map = ClusterSlotMap()
        let changes = try map.apply(topology(threeShards))
        #expect(changes.added == ["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"])
        #expect(changes.removed.isEmpty)
        #expect(map.isKnown)
        // Both ends of every range, where an off-by-one would show.
        #expect(map.primary(forSlot: 0) == "127.0.0.1:30001")
        #expect(map.primary(forSlot: 5460) == "127.0.0.1:30001")
        #expect(map.primary(forSlot: 5461) == "127.0.0.1:30002")
        #expect(map.primary(forSlot: 10922) == "127.0.0.1:30002")
        #expect(map.primary(forSlot: 10923) == "127.0.0.1:30003")
        #expect(map.primary(forSlot: 16383) == "127.0.0.1:30003")
        #expect(map.primary(forSlot: HashSlot.of("foo")) == "127.0.0.1:30003")
    }

    @Test func applyReportsPrimariesThatAppearedAndDisappeared() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology(threeShards))
        let version = map.version
        // A failover: 30004 took over 30002's slots.
        let changes = try map.apply(topology([(0...5460, 30001), (5461...10922, 30004), (10923...16383, 30003)]))
        #expect(changes.added == ["127.0.0.1:30004"])
        #expect(changes.removed == ["127.0.0.1:30002"])
        #expect(map.primaries == ["127.0.0.1:30001", "127.0.0.1:30004", "127.0.0.1:30003"])
        #expect(map.primary(forSlot: 6000) == "127.0.0.1:30004")
        // A router holding the old version can tell its view is stale.
        #expect(map.version > version)
    }

    @Test func slotsNoShardServesHaveNoPrimary() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology([(0...99, 30001), (200...16383, 30002)]))
        #expect(map.primary(forSlot: 100) == nil)
        #expect(map.primary(forSlot: 199) == nil)
        #expect(map.primary(forSlot: 200) == "127.0.0.1:30002")
    }

    @Test func movedToAKnownPrimaryChangesOnlyThatSlot() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology(threeShards))
        let version = map.version
        // `#expect` cannot hold a mutating call (swiftlang/swift-testing#1360): each result is taken first.
        let isNewPrimary = map.moved(slot: 3999, to: "127.0.0.1:30002")
        #expect(!isNewPrimary)
        #expect(map.primary(forSlot: 3999) == "127.0.0.1:30002")
        // Its neighbours are still where the topology put them until the next refresh says otherwise.
        #expect(map.primary(forSlot: 3998) == "127.0.0.1:30001")
        #expect(map.primary(forSlot: 4000) == "127.0.0.1:30001")
        #expect(map.primaries.count == 3)
        #expect(map.version > version)
    }

    @Test func movedToAnUnknownAddressAddsAPrimary() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology(threeShards))
        // true: the router must make a pool for the new node.
        let isNewPrimary = map.moved(slot: 3999, to: "127.0.0.1:30007")
        #expect(isNewPrimary)
        #expect(map.primaries == ["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003", "127.0.0.1:30007"])
        #expect(map.primary(forSlot: 3999) == "127.0.0.1:30007")
        // The second slot to move there finds it known.
        let isNewAgain = map.moved(slot: 4000, to: "127.0.0.1:30007")
        #expect(!isNewAgain)
        #expect(map.primaries.count == 4)
    }

    /// A primary whose last slot moved away (a reshard, a failover seen through `MOVED`) is no
    /// primary any more: not asked for the topology, not given libraries.
    @Test func aPrimaryWhoseLastSlotMovedAwayIsNoPrimary() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology([(0...1, 30001), (2...16383, 30002)]))
        _ = map.moved(slot: 0, to: "127.0.0.1:30002")
        #expect(map.primaries == ["127.0.0.1:30001", "127.0.0.1:30002"], "it still serves slot 1")
        _ = map.moved(slot: 1, to: "127.0.0.1:30002")
        #expect(map.primaries == ["127.0.0.1:30002"])
        // Back again: a primary again, and the router is told to make its pool.
        let isNewPrimary = map.moved(slot: 1, to: "127.0.0.1:30001")
        #expect(isNewPrimary)
        #expect(map.primaries == ["127.0.0.1:30001", "127.0.0.1:30002"])
    }

    @Test func replicasAreKnownPerShardAndOfflineOnesLeftOut() throws {
        let reply = RESPReply.array([
            shard(
                slots: [0, 8191],
                nodes: [
                    shardNode(id: "a", port: 30001, role: "master"), shardNode(id: "d", port: 30004, role: "replica"),
                    shardNode(id: "e", port: 30005, role: "replica", health: "loading"),
                ]),
            shard(slots: [8192, 16383], nodes: [shardNode(id: "b", port: 30002, role: "master")]),
        ])
        var map = ClusterSlotMap()
        _ = map.apply(try ClusterTopology(shardsReply: reply, fallbackHost: "127.0.0.1"))
        #expect(map.replicas(forSlot: 0) == ["127.0.0.1:30004"])
        #expect(map.replicas(forSlot: 8191) == ["127.0.0.1:30004"])
        #expect(map.replicas(forSlot: 8192).isEmpty)
        #expect(map.replicaAddresses == ["127.0.0.1:30004"])
    }

    @Test func movedForASlotOutOfRangeIsIgnored() throws {
        var map = ClusterSlotMap()
        _ = try map.apply(topology(threeShards))
        let version = map.version
        let below = map.moved(slot: -1, to: "127.0.0.1:30007")
        let above = map.moved(slot: 16384, to: "127.0.0.1:30007")
        #expect(!below && !above)
        #expect(map.primaries.count == 3)
        #expect(map.version == version)
    }
}

// MARK: - Command routing

@Suite("Command slots")
struct CommandSlotTests {
    @Test func keyCommandsRouteByTheirFirstArgument() {
        let foo = 12182  // CLUSTER KEYSLOT foo
        #expect(RESPCommand("GET", "foo").slot == foo)
        // The value does not count, only the key.
        #expect(RESPCommand("SET", "foo", "bar", "PX", 1000).slot == foo)
        #expect(RESPCommand("HSET", "foo", "field", "value").slot == foo)
        // Multi-key commands go by their first key (the server answers CROSSSLOT if they differ).
        #expect(RESPCommand("DEL", "foo", "somekey").slot == foo)
        // Case does not matter to Redis, so it must not matter to routing.
        #expect(RESPCommand("get", "foo").slot == foo)
        #expect(RESPCommand("GET", "somekey").slot == 11058)
    }

    @Test func keysWithTheSameHashTagRouteTogether() {
        let following = RESPCommand("SMEMBERS", "{user1000}.following").slot
        #expect(following == 3443)
        #expect(RESPCommand("SMEMBERS", "{user1000}.followers").slot == following)
        #expect(RESPCommand("GET", "user1000").slot == following)
    }

    @Test func binaryAndIntegerKeysHashTheirBytes() {
        let foo = RESPCommand("GET", "foo").slot
        #expect(RESPCommand("GET", .bytes(Array("foo".utf8))).slot == foo)
        #expect(RESPCommand("GET", .buffer(ByteBuffer(string: "foo"))).slot == foo)
        // An integer key is sent as its decimal text, so it hashes as that text.
        #expect(RESPCommand("GET", .integer(123)).slot == HashSlot.of("123"))
        // Binary-safe: a NUL byte is part of the key.
        #expect(RESPCommand("GET", .bytes([107, 0, 121])).slot == 1060)
    }

    @Test func functionsAndScriptsRouteByTheirFirstDeclaredKey() {
        let foo = HashSlot.of("foo")
        // FCALL name numkeys key... arg...: argument 1 is the function's name, never a key.
        #expect(RESPCommand("FCALL", "touch", 1, "foo", "30000").slot == foo)
        #expect(RESPCommand("FCALL", "move", 2, "foo", "somekey").slot == foo)
        #expect(RESPCommand("FCALL_RO", "read", 1, "foo").slot == foo)
        #expect(RESPCommand("EVAL", "return redis.call('GET', KEYS[1])", 1, "foo").slot == foo)
        #expect(RESPCommand("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, "foo").slot == foo)
        #expect(RESPCommand("EVAL_RO", "return 1", 1, "foo").slot == foo)
        #expect(RESPCommand("EVALSHA_RO", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, "foo").slot == foo)
        // numkeys may be sent as text.
        #expect(RESPCommand("FCALL", "touch", "1", "foo").slot == foo)
        // Hash tags apply to the declared key, as for any key.
        #expect(RESPCommand("FCALL", "touch", 1, "{user1000}.session", "x").slot == 3443)
    }

    @Test func functionsAndScriptsWithoutKeysGoAnywhere() {
        // With numkeys 0 every following argument is a plain argument: hashing one would pin the
        // call to an arbitrary node.
        #expect(RESPCommand("FCALL", "stats", 0).slot == nil)
        #expect(RESPCommand("FCALL", "stats", 0, "foo").slot == nil)
        #expect(RESPCommand("FCALL", "stats", "0", "foo").slot == nil)
        #expect(RESPCommand("EVAL", "return 1", 0).slot == nil)
        #expect(RESPCommand("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 0, "foo").slot == nil)
    }

    @Test func scriptCommandsRouteTheSameInAnyCase() {
        // Redis takes command names in any case, and the other commands route case-insensitively.
        let foo = HashSlot.of("foo")
        #expect(RESPCommand("fcall", "touch", 1, "foo").slot == foo)
        #expect(RESPCommand("eval", "return 1", 0, "foo").slot == nil)
        #expect(RESPCommand("Fcall", "touch", 1, "foo").slot == foo)
        #expect(RESPCommand("Fcall", "stats", 0, "foo").slot == nil)
        #expect(RESPCommand("eval_ro", "return 1", 0).slot == nil)
        #expect(RESPCommand("evalsha_ro", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, "foo").slot == foo)
    }

    @Test(arguments: [
        RESPCommand("PING"), RESPCommand("ping"), RESPCommand("TIME"), RESPCommand("INFO", "server"),
        RESPCommand("FUNCTION", "LOAD", "REPLACE", "#!lua name=sessions"), RESPCommand("SCRIPT", "LOAD", "return 1"),
        RESPCommand("PUBLISH", "channel", "message"), RESPCommand("CLUSTER", "SHARDS"), RESPCommand("CONFIG", "GET", "maxmemory"),
        RESPCommand("SCAN", 0, "MATCH", "session:*"), RESPCommand("DBSIZE"), RESPCommand("MEMORY", "STATS"),
    ])
    func keylessCommandsGoAnywhere(command: RESPCommand) {
        #expect(command.slot == nil)
    }

    @Test func keysAfterASubcommandOrKeyword() {
        let foo = HashSlot.of("foo")
        // The key follows the subcommand.
        #expect(RESPCommand("MEMORY", "USAGE", "foo").slot == foo)
        #expect(RESPCommand("OBJECT", "ENCODING", "foo").slot == foo)
        // Streams are named after the STREAMS keyword, in any case.
        #expect(RESPCommand("XREAD", "COUNT", 10, "STREAMS", "foo", "somekey", "0", "0").slot == foo)
        #expect(RESPCommand("XREAD", "streams", "foo", "0").slot == foo)
        #expect(RESPCommand("XREADGROUP", "GROUP", "workers", "w1", "STREAMS", "foo", ">").slot == foo)
        #expect(RESPCommand("XINFO", "STREAM", "foo").slot == foo)
        #expect(RESPCommand("XGROUP", "CREATE", "foo", "workers", "$").slot == foo)
        // BITOP's operation, then the destination key.
        #expect(RESPCommand("BITOP", "AND", "foo", "somekey").slot == foo)
        // numkeys first, then the keys.
        #expect(RESPCommand("LMPOP", 2, "foo", "somekey", "LEFT").slot == foo)
        #expect(RESPCommand("ZMPOP", 1, "foo", "MIN").slot == foo)
        #expect(RESPCommand("SINTERCARD", 1, "foo").slot == foo)
        #expect(RESPCommand("ZUNION", 2, "foo", "somekey").slot == foo)
        #expect(RESPCommand("zinter", 1, "foo").slot == foo)
        #expect(RESPCommand("ZDIFF", 1, "foo").slot == foo)
        // A timeout, then numkeys, then the keys.
        #expect(RESPCommand("BLMPOP", 0, 1, "foo", "LEFT").slot == foo)
        #expect(RESPCommand("BZMPOP", "0.5", 1, "foo", "MAX").slot == foo)
        // A subcommand without a key goes anywhere.
        #expect(RESPCommand("XINFO", "HELP").slot == nil)
    }

    @Test func readOnlyCommandsAreTold() {
        for command in [
            RESPCommand("GET", "foo"), RESPCommand("hgetall", "foo"), RESPCommand("FCALL_RO", "read", 1, "foo"),
            RESPCommand("EVALSHA_RO", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", 1, "foo"), RESPCommand("ZRANGE", "foo", 0, -1),
            RESPCommand("PTTL", "foo"), RESPCommand("LRANGE", "foo", 0, -1),
        ] {
            #expect(command.isReadOnly, "\(command.name)")
        }
        // Writes, scripts that may write, blocking reads and unknown commands are not.
        for command in [
            RESPCommand("SET", "foo", "bar"), RESPCommand("FCALL", "read", 1, "foo"), RESPCommand("EVAL", "return 1", 0),
            RESPCommand("GETDEL", "foo"), RESPCommand("GETEX", "foo", "PX", 10), RESPCommand("BLPOP", "foo", 0),
            RESPCommand("XREAD", "BLOCK", 0, "STREAMS", "foo", "$"), RESPCommand("SORT", "foo"), RESPCommand("NOSUCH", "foo"),
        ] {
            #expect(!command.isReadOnly, "\(command.name)")
        }
    }
}

// MARK: - Hash slots

@Suite("Hash slots")
struct HashSlotTests {
    @Test func crc16MatchesTheClusterSpecCheckValue() {
        // The Redis Cluster spec's reference: CRC16 (XMODEM) of "123456789" is 0x31C3.
        #expect(HashSlot.crc16("123456789".utf8) == 0x31C3)
        #expect(HashSlot.crc16([UInt8]()) == 0)
    }

    @Test(arguments: [("foo", 12182), ("somekey", 11058), ("hello", 866), ("bar", 5061), ("", 0)])
    func slotMatchesClusterKeyslot(key: String, slot: Int) {
        // What `CLUSTER KEYSLOT key` answers.
        #expect(HashSlot.of(key) == slot)
    }

    @Test func keysWithTheSameHashTagShareASlot() {
        // Only the tag is hashed, so these keys may be used together by one command or function.
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("{user1000}.followers"))
        #expect(HashSlot.of("{user1000}.following") == HashSlot.of("user1000"))
        #expect(HashSlot.of("user1000") == 3443)
    }

    @Test func onlyTheFirstNonEmptyTagCounts() {
        // The spec's examples. An empty first tag means no tag: the whole key is hashed.
        #expect(HashSlot.of("foo{}{bar}") == Int(HashSlot.crc16("foo{}{bar}".utf8) & 0x3FFF))
        #expect(HashSlot.of("foo{}{bar}") == 8363)
        #expect(HashSlot.of("foo{}{bar}") != HashSlot.of("bar"))
        // The tag runs from the first "{" to the next "}": here it is "{bar".
        #expect(HashSlot.of("foo{{bar}}zap") == HashSlot.of("{bar"))
        #expect(HashSlot.of("foo{{bar}}zap") == 4015)
        // Only the first tag counts.
        #expect(HashSlot.of("foo{bar}{zap}") == HashSlot.of("bar"))
        // An unclosed brace is no tag.
        #expect(HashSlot.of("foo{bar") == Int(HashSlot.crc16("foo{bar".utf8) & 0x3FFF))
    }

    @Test func bytesAndStringsHashAlike() {
        #expect(HashSlot.of(Array("foo".utf8)) == HashSlot.of("foo"))
        #expect(HashSlot.of(Array("{user1000}.following".utf8)) == 3443)
        // Binary-safe: "k\0y".
        #expect(HashSlot.of([107, 0, 121] as [UInt8]) == 1060)
    }
}

// MARK: - Sentinel answers

@Suite("Sentinel answers")
struct SentinelAnswerTests {
    @Test func onlyTheSubscriptionsOwnConfirmationConfirmsIt() {
        let confirmation = RESPReply.array([
            .bulkString(ByteBuffer(string: "subscribe")), .bulkString(ByteBuffer(string: "+switch-master")), .integer(1),
        ])
        let message = RESPReply.array([
            .bulkString(ByteBuffer(string: "message")), .bulkString(ByteBuffer(string: "+switch-master")),
            .bulkString(ByteBuffer(string: "x")),
        ])
        #expect(SentinelDiscovery.isConfirmation(confirmation))
        #expect(!SentinelDiscovery.isConfirmation(message))
        #expect(!SentinelDiscovery.isConfirmation(.integer(1)))
    }
}
