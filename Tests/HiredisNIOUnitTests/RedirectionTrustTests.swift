@_spi(Testing) import EmbeddedRedis
import HiredisNIO
import NIOConcurrencyHelpers
import NIOCore
import TestSupport
import Testing

/// A cluster node (or whoever answers as one) names where a command must go: the client connects
/// there, with the credentials, only when the cluster's own topology names that node.
@Suite("Cluster redirections go only to nodes the topology names")
struct RedirectionTrustTests {
    /// A `MOVED` to an address the topology does not name (also when read again) is refused with
    /// a typed error, and that address never sees a connection, let alone the password.
    @Test func aMovedToANodeTheTopologyDoesNotNameIsRefusedAndGetsNoCredentials() async throws {
        let reached = NIOLockedValueBox<[String]>([])
        let elsewhere = try await FakeServer(answering: { _, _, text in
            reached.withLockedValue { $0.append(text) }
            return "+OK\r\n"
        })
        let ownPort = NIOLockedValueBox(0)
        let node = try await FakeServer(answering: { _, _, text in
            Self.commands(in: text).map { command in
                switch command.first?.uppercased() {
                case "CLUSTER": return Self.shards(primaryPort: ownPort.withLockedValue { $0 })
                case "GET": return "-MOVED 866 127.0.0.1:\(elsewhere.port)\r\n"
                default: return "+OK\r\n"
                }
            }.joined()
        })
        ownPort.withLockedValue { $0 = node.port }
        let client = try HiredisClient.started(
            configuration: try HiredisConfiguration(url: "redis+cluster://:s3cret@127.0.0.1:\(node.port)"))
        let error = await expectRedisError { _ = try await client.send(RESPCommand("GET", "k")) }
        #expect(error?.code == .untrustedRedirection && error?.commandMayHaveRun == false)
        #expect(reached.withLockedValue { $0 }.isEmpty, "the redirect target was contacted")
        await client.close()
        await node.close()
        await elsewhere.close()
    }

    /// The commands of a chunk of RESP requests, as their words (arguments are bulk strings).
    static func commands(in text: String) -> [[String]] {
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

    /// A `CLUSTER SHARDS` reply: one shard with every slot, its primary on `primaryPort`.
    static func shards(primaryPort: Int) -> String {
        let fields = [
            "$2\r\nid\r\n$1\r\na\r\n", "$4\r\nport\r\n:\(primaryPort)\r\n", "$2\r\nip\r\n$9\r\n127.0.0.1\r\n",
            "$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n", "$4\r\nrole\r\n$6\r\nmaster\r\n", "$6\r\nhealth\r\n$6\r\nonline\r\n",
        ]
        return "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*12\r\n" + fields.joined()
    }
}
