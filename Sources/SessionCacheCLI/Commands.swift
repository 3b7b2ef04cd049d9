import ArgumentParser
import Foundation
import HiredisNIO
import NIOCore
import SessionCache

struct ListSessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List a user's sessions, most recently written first.",
        discussion: """
            redis-cli equivalent (b is the user's bucket, crc16(user) mod the bucket count; this command \
            prints it):
              redis-cli FCALL_RO session_v3_list 1 '<ns>:{b}:user:<user>' 50 1000
              redis-cli ZREVRANGE '<ns>:{b}:user:<user>' 0 -1 WITHSCORES
              redis-cli HGETALL '<ns>:{b}:session:<id>'   (for each id)
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The user.") var user: String
    @Option(help: "At most this many.") var limit = 50

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        let sessions = try await store.list(user: user, limit: limit)
        if connection.json { return try printJSON(sessions) }
        if sessions.isEmpty { return print("no sessions for \(user) (index \(store.keyspace.userSessions(user)))") }
        print("index \(store.keyspace.userSessions(user))")
        print("ID                                           AGENT        MESSAGES  STATE     UPDATED (UTC)            PREVIEW")
        for session in sessions {
            print(
                session.id.padding(toLength: 45, withPad: " ", startingAt: 0)
                    + (session.agentType ?? "-").padding(toLength: 13, withPad: " ", startingAt: 0)
                    + "\(session.messageCount)".padding(toLength: 10, withPad: " ", startingAt: 0)
                    + session.state.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)
                    + timeFormatter.string(from: session.updatedAt).padding(toLength: 25, withPad: " ", startingAt: 0)
                    + (session.preview ?? ""))
        }
    }
}

struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a session: its fields, the TTL of each key, recent messages, the lock holder.",
        discussion: """
            redis-cli equivalent (the bucket {b} is named by the id's first three characters; `ls` and `ttl` \
            show it):
              redis-cli HGETALL '<ns>:{b}:session:<id>'
              redis-cli --scan --pattern '<ns>:{b}:session:<id>*'        (its keys; PTTL each)
              redis-cli LRANGE '<ns>:{b}:session:<id>:messages' 0 -1
              redis-cli GET '<ns>:{b}:session:<id>:lock'
            """)

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The session id.") var id: String

    struct Output: Encodable {
        var id: String
        var fields: [String: String]
        var ttlMilliseconds: [String: Int]
        var messages: [SessionMessage]
        var lockHolder: String?
        var lockTTLMilliseconds: Int?
    }

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        let keyspace = store.keyspace
        guard keyspace.bucket(ofSession: id) != nil else { throw ValidationError("'\(id)' is not a session id of this keyspace") }
        let base = keyspace.session(id)
        let replies = try await client.pipeline([
            RESPCommand("HGETALL", .string(base)), RESPCommand("LRANGE", .string(keyspace.messages(id)), 0, -1),
            RESPCommand("GET", .string(keyspace.lock(id))),
        ])
        var fields: [String: String] = [:]
        let pairs = replies[0].array ?? []
        for index in stride(from: 0, to: pairs.count - 1, by: 2) { fields[pairs[index].string ?? ""] = pairs[index + 1].string ?? "" }
        guard !fields.isEmpty else { throw ValidationError("no session \(id) in namespace \(connection.namespace)") }
        var keys = [base, keyspace.messages(id), keyspace.lock(id)]
        if let idle = Int(fields[SessionKeyspace.Field.idle] ?? ""), let deadline = Int(fields[SessionKeyspace.Field.deadline] ?? "") {
            keys.insert(keyspace.timer(id, idleMilliseconds: idle, deadline: deadline), at: 2)
        }
        let ttlReplies = try await client.pipeline(keys.map { RESPCommand("PTTL", .string($0)) })
        var ttls: [String: Int] = [:]
        for (key, reply) in zip(keys, ttlReplies) { ttls[key] = reply.int ?? -2 }
        let messages = (replies[1].array ?? []).compactMap { $0.string.flatMap(SessionMessage.init(storedLine:)) }
        let holder = replies[2].string
        let output = Output(
            id: id, fields: fields, ttlMilliseconds: ttls, messages: messages, lockHolder: holder,
            lockTTLMilliseconds: holder == nil ? nil : ttls[keyspace.lock(id)])
        if connection.json { return try printJSON(output) }
        print("session \(id)")
        for key in fields.keys.sorted() { print("  " + key.padding(toLength: 18, withPad: " ", startingAt: 0) + (fields[key] ?? "")) }
        print("keys")
        for key in keys { print("  " + key.padding(toLength: 90, withPad: " ", startingAt: 0) + human(milliseconds: ttls[key] ?? -2)) }
        print("recent messages (\(messages.count))")
        for message in messages { print("  [\(timeFormatter.string(from: message.at))] \(message.role): \(message.content)") }
        if let holder {
            print("lock: held by \(holder.prefix(8))…, lease \(human(milliseconds: ttls[keyspace.lock(id)] ?? 0)) left")
        } else {
            print("lock: free")
        }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Active sessions, sessions per user, average session duration.",
        discussion: """
            Sums every bucket's figures (one FCALL_RO session_v3_stats per bucket). redis-cli equivalent, per bucket b:
              redis-cli FCALL_RO session_v3_stats 1 '<ns>:{b}:stats'
              redis-cli HGETALL '<ns>:{b}:stats'
            """)

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        let stats = try await store.stats()
        if connection.json { return try printJSON(stats) }
        print("active sessions         \(stats.activeSessions)")
        print("users                   \(stats.users)")
        print(String(format: "sessions per user       %.2f", stats.sessionsPerUser))
        print("ended sessions          \(stats.endedSessions)")
        print(String(format: "average session         %.1f s", stats.averageSessionDurationSeconds))
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream lifecycle events as they happen: created, resumed, expired, deleted, rotated.",
        discussion: """
            redis-cli equivalent:
              redis-cli SUBSCRIBE '<ns>:events'
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Stop after this many events.") var count: Int?

    func run() async throws {
        let (client, _) = try connection.connect()
        defer { Task { await client.close() } }
        let subscriber = HiredisSubscriber(configuration: client.configuration)
        Task { try? await subscriber.run() }
        try await subscriber.subscribe(channels: ["\(connection.namespace):events"])
        if !connection.json { print("watching \(connection.namespace):events (Ctrl-C to stop)") }
        fflush(nil)
        var seen = 0
        for await event in subscriber.events {
            guard case .message(_, _, let payload) = event else { continue }
            let text = String(buffer: payload)
            if connection.json {
                print(text)
            } else if let event = LifecycleEvent(json: text) {
                let time = timeFormatter.string(from: Date(timeIntervalSince1970: Double(event.at) / 1000))
                print(
                    "\(time)  \(event.event.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0))  \(event.user.padding(toLength: 16, withPad: " ", startingAt: 0))  \(event.session)"
                        + (event.detail.map { "  \($0)" } ?? ""))
            }
            fflush(nil)
            seen += 1
            if let count, seen >= count { break }
        }
        await subscriber.close()
    }
}

struct Kill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a session, or every session of a user (log out everywhere).",
        discussion: """
            redis-cli equivalent (one atomic call each, with the indexes and statistics kept in step):
              redis-cli FCALL session_v3_delete 1 '<ns>:{b}:session:<id>' '<ns>:events' 2700000000
              redis-cli FCALL session_v3_delete_user 1 '<ns>:{b}:user:<user>' '<ns>:events' 2700000000 100 '<user>'  (again while the last number is above 0)
            """)

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The session id.") var id: String?
    @Option(help: "Delete every session of this user instead.") var user: String?

    func validate() throws {
        if (id == nil) == (user == nil) { throw ValidationError("give a session id, or --user") }
    }

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        if let user {
            let count = try await store.deleteAll(user: user)
            if connection.json { return try printJSON(["user": user, "deleted": "\(count)"]) }
            print("deleted \(count) session(s) of \(user)")
        } else if let id {
            let existed = try await store.delete(id)
            if connection.json { return try printJSON(["session": id, "deleted": existed ? "1" : "0"]) }
            print(existed ? "deleted \(id)" : "no session \(id)")
            if !existed { throw ExitCode(1) }
        }
    }
}

struct TTL: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ttl", abstract: "Time left before a session expires: idle timer and absolute deadline.",
        discussion: """
            redis-cli equivalent (the timer's name carries the idle timeout and the deadline, in ms):
              redis-cli HMGET '<ns>:{b}:session:<id>' idle_ms deadline_at
              redis-cli PTTL '<ns>:{b}:session:<id>:timer:<idle_ms>:<deadline_at>'
              redis-cli TIME
            """)

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The session id.") var id: String

    struct Output: Encodable {
        var id: String
        var idleMillisecondsLeft: Int
        var absoluteMillisecondsLeft: Int?
        var idleTimeoutMilliseconds: Int?
    }

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        let keyspace = store.keyspace
        guard keyspace.bucket(ofSession: id) != nil else { throw ValidationError("'\(id)' is not a session id of this keyspace") }
        let fields =
            try await client.send(
                RESPCommand(
                    "HMGET", .string(keyspace.session(id)), .string(SessionKeyspace.Field.idle), .string(SessionKeyspace.Field.deadline))
            ).array ?? []
        let idle = fields.first?.int
        let deadline = fields.count == 2 ? fields[1].int : nil
        var left = -2
        if let idle, let deadline {
            left =
                try await client.send(RESPCommand("PTTL", .string(keyspace.timer(id, idleMilliseconds: idle, deadline: deadline)))).int
                ?? -2
        }
        let now = try await connection.redisNow(client)
        let output = Output(
            id: id, idleMillisecondsLeft: left, absoluteMillisecondsLeft: deadline.map { $0 - now }, idleTimeoutMilliseconds: idle)
        if connection.json { return try printJSON(output) }
        guard left > 0 else {
            print("\(id): not alive")
            throw ExitCode(1)
        }
        print("\(id): expires in \(human(milliseconds: left)) unless active (idle timeout \(human(milliseconds: idle ?? 0)))")
        if let absolute = output.absoluteMillisecondsLeft { print("  absolute deadline in \(human(milliseconds: absolute))") }
    }
}
