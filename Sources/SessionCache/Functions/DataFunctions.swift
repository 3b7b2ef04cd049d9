import HiredisNIO
import NIOCore

// Typed wrappers of the data functions of `sessions.lua`: messages, metadata, lists, stats.

/// What a write under a lease sends: the lease's token and tab ('' for none).
struct LeaseArguments: Sendable {
    let token: String
    let tab: String

    static let none = LeaseArguments(token: "", tab: "")
    var arguments: [RESPArgument] { [.string(token), .string(tab)] }
}

/// How a write function turned out.
enum WriteResult: Sendable, Equatable {
    case written
    case notAlive
    case tooLarge(bytes: Int)
    case tooManyKeys(count: Int)
    case staleLease
    /// The session is being bound to its user (``SessionError/bindingInProgress``).
    case binding
}

/// `append`: appends messages, trims the window, checks the size after trimming.
struct AppendFunction: SessionFunction {
    struct Result: Sendable, Equatable {
        let write: WriteResult
        /// The list's length after the append (0 unless written).
        let length: Int
    }

    static let name = "append"
    let sessionKey: String
    let lease: LeaseArguments
    let window: Int
    let maxSessionBytes: Int
    let messages: [(role: String, content: String)]

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        var arguments = lease.arguments + [.integer(window), .integer(maxSessionBytes)]
        for message in messages { arguments += [.string(message.role), .string(message.content)] }
        return arguments
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return Result(write: .written, length: try reply.int(0))
        case .notAlive: return Result(write: .notAlive, length: 0)
        case .tooLarge: return Result(write: .tooLarge(bytes: try reply.int(0)), length: 0)
        case .staleLease: return Result(write: .staleLease, length: 0)
        case .binding: return Result(write: .binding, length: 0)
        default: throw reply.unexpected()
        }
    }
}

/// `clear_messages`: empties the messages.
struct ClearMessagesFunction: SessionFunction {
    static let name = "clear_messages"
    let sessionKey: String
    let lease: LeaseArguments

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { lease.arguments }

    func decode(_ reply: RESPReply) throws(SessionError) -> WriteResult {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return .written
        case .notAlive: return .notAlive
        case .staleLease: return .staleLease
        case .binding: return .binding
        default: throw reply.unexpected()
        }
    }
}

/// `set_metadata`: writes only the given metadata fields; optionally changes the timeout mode.
struct SetMetadataFunction: SessionFunction {
    struct Result: Sendable, Equatable {
        let write: WriteResult
        /// The session's timer after the write ('' when the new mode ended the session).
        let timer: String?
        /// Redis's clock when it ran (0 unless written).
        var now = 0
    }

    /// A timeout-mode change.
    struct ModeChange: Sendable {
        let mode: TimeoutMode
        let absoluteLifetime: Duration
    }

    static let name = "set_metadata"
    let sessionKey: String
    let lease: LeaseArguments
    let limits: SessionStoreConfiguration.Limits
    let modeChange: ModeChange?
    let retention: DataRetention
    /// Field/value pairs; an empty value removes the field.
    let fields: [(field: String, value: String)]

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        var arguments =
            lease.arguments + [
                .integer(limits.maxSessionBytes), .integer(limits.maxMetadataKeys), .string(modeChange?.mode.storedName ?? ""),
                .integer(modeChange?.mode.idleTimeout.wholeMilliseconds ?? 0),
                .integer(modeChange?.absoluteLifetime.wholeMilliseconds ?? 0), .integer(retention.warningLeadMilliseconds),
                .integer(retention.indexLifetimeMilliseconds),
            ]
        for (field, value) in fields { arguments += [.string(field), .string(value)] }
        return arguments
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return Result(write: .written, timer: try reply.string(1), now: try reply.int(2))
        case .notAlive: return Result(write: .notAlive, timer: nil)
        case .tooLarge: return Result(write: .tooLarge(bytes: try reply.int(0)), timer: nil)
        case .tooManyKeys: return Result(write: .tooManyKeys(count: try reply.int(0)), timer: nil)
        case .staleLease: return Result(write: .staleLease, timer: nil)
        case .binding: return Result(write: .binding, timer: nil)
        default: throw reply.unexpected()
        }
    }
}

/// `recent_messages` (read-only).
struct RecentMessagesFunction: SessionFunction {
    static let name = "recent_messages"
    static let isReadOnly = true
    let sessionKey: String
    let limit: Int

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.integer(limit)] }

    /// The stored lines, oldest first; nil when the session is not alive.
    func decode(_ reply: RESPReply) throws(SessionError) -> [RESPReply]? {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return try reply.array(0)
        case .notAlive: return nil
        default: throw reply.unexpected()
        }
    }
}

/// `list` (read-only): a user's live sessions, most recent write first.
struct ListFunction: SessionFunction {
    static let name = "list"
    static let isReadOnly = true
    let userIndexKey: String
    let limit: Int
    /// The most index entries the call looks at.
    let scan: Int

    var keys: [RESPArgument] { [.string(userIndexKey)] }
    var arguments: [RESPArgument] { [.integer(limit), .integer(scan)] }

    func decode(_ reply: RESPReply) throws(SessionError) -> [SessionSummary] {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
        return try reply.array(1).map { entry throws(SessionError) in
            guard let parts = entry.array, parts.count == 6, let id = parts[0].string, let activity = parts[2].int else {
                throw .corrupted("\(Self.name): unexpected entry \(entry)")
            }
            let agent = parts[1].string.flatMap { $0.isEmpty ? nil : $0 }
            var preview: String?
            if case .bulkString(let last) = parts[5], last.readableBytes > 0, let message = MessageCoding.decode(last) {
                preview = MessageCoding.preview(message.content)
            }
            return SessionSummary(
                id: id, agentType: agent, preview: preview, updatedAt: SessionRecord.date(activity), messageCount: parts[3].int ?? 0,
                state: parts[4].string.flatMap(SessionState.init(rawValue:)) ?? .active)
        }
    }
}

/// `devices` (read-only): a user's live sessions as devices, newest activity first.
struct DevicesFunction: SessionFunction {
    static let name = "devices"
    static let isReadOnly = true
    let userIndexKey: String
    let limit: Int
    /// The most index entries the call looks at.
    let scan: Int
    /// The id of the asking request's session.
    let current: String?

    var keys: [RESPArgument] { [.string(userIndexKey)] }
    var arguments: [RESPArgument] { [.integer(limit), .integer(scan)] }

    func decode(_ reply: RESPReply) throws(SessionError) -> [DeviceSession] {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
        return try reply.array(1).map { entry throws(SessionError) in
            guard let parts = entry.array, parts.count == 5, let id = parts[0].string, let activity = parts[1].int,
                let created = parts[2].int, let handle = parts[4].string
            else {
                throw .corrupted("\(Self.name): unexpected entry shape")
            }
            return DeviceSession(
                handle: handle, device: parts[3].string.flatMap { $0.isEmpty ? nil : $0 }, createdAt: SessionRecord.date(created),
                lastActivity: SessionRecord.date(activity), isCurrent: id == current)
        }
    }
}

/// `set_device`: the session's device label.
struct SetDeviceFunction: SessionFunction {
    static let name = "set_device"
    let sessionKey: String
    /// Empty: none.
    let label: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.string(label)] }

    func decode(_ reply: RESPReply) throws(SessionError) {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return
        case .notFound: throw .notFound
        case .binding: throw .bindingInProgress
        default: throw reply.unexpected()
        }
    }
}

/// `stats` (read-only): one bucket's counters.
struct StatsFunction: SessionFunction {
    struct Result: Sendable {
        var created = 0
        var ended = 0
        var endedLifetimeMilliseconds = 0
        var sessions = 0
        var users = 0
    }

    static let name = "stats"
    static let isReadOnly = true
    let statsKey: String

    var keys: [RESPArgument] { [.string(statsKey)] }
    var arguments: [RESPArgument] { [] }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        guard let parts = reply.array, parts.count == 5 else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
        return Result(
            created: parts[0].int ?? 0, ended: parts[1].int ?? 0, endedLifetimeMilliseconds: parts[2].int ?? 0, sessions: parts[3].int ?? 0,
            users: parts[4].int ?? 0)
    }
}
