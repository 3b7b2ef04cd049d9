import HiredisNIO
import NIOCore

// Typed wrappers of the lifecycle functions of `sessions.lua`. Each documents its keys, arguments
// and reply in the Lua file; here they are built and decoded.

/// How a session's data outlives its timer: until the expiry listener finalizes it (at most the
/// safety TTL past the deadline), or a grace period past the timer when no listener runs.
struct DataRetention: Sendable {
    let listener: Bool
    let graceMilliseconds: Int
    /// How long the bucket's index keys live past their last write: longer than any session.
    let indexLifetimeMilliseconds: Int
    let warningLeadMilliseconds: Int

    var listenerFlag: RESPArgument { listener ? "1" : "0" }
}

/// `create`: a new session.
struct CreateFunction: SessionFunction {
    enum Result: Sendable {
        case created(timer: String, now: Int, deadline: Int)
        /// The id exists already (never reused).
        case exists
    }

    static let name = "create"
    let sessionKey: String
    let user: String?
    let mode: TimeoutMode
    let absoluteLifetime: Duration
    let agentType: String?
    let retention: DataRetention
    let eventsChannel: String
    /// 0: no cap.
    let maxSessionsPerUser: Int
    let metadata: [(field: String, value: String)]

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        var arguments: [RESPArgument] = [
            .string(user ?? ""), .string(mode.storedName), .integer(mode.idleTimeout.wholeMilliseconds),
            .integer(absoluteLifetime.wholeMilliseconds), .string(agentType ?? ""), retention.listenerFlag,
            .integer(retention.graceMilliseconds), .integer(retention.warningLeadMilliseconds),
            .integer(retention.indexLifetimeMilliseconds), .string(eventsChannel), .integer(maxSessionsPerUser),
        ]
        arguments.reserveCapacity(arguments.count + metadata.count * 2)
        for (field, value) in metadata { arguments += [.string(field), .string(value)] }
        return arguments
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return .created(timer: try reply.string(0), now: try reply.int(1), deadline: try reply.int(2))
        case .exists: return .exists
        default: throw reply.unexpected()
        }
    }
}

/// `touch`: meaningful activity, when a plain PEXPIRE will not do (see ``TimerNames``).
struct TouchFunction: SessionFunction {
    static let name = "touch"
    let sessionKey: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [] }

    /// The timer's name and Redis's clock, or nil when the session is not alive.
    func decode(_ reply: RESPReply) throws(SessionError) -> (timer: String, now: Int)? {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return (try reply.string(0), try reply.int(1))
        case .notAlive: return nil
        default: throw reply.unexpected()
        }
    }
}

/// `heartbeat`: liveness without extending the session.
struct HeartbeatFunction: SessionFunction {
    static let name = "heartbeat"
    let sessionKey: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [] }

    /// Whether the session is alive.
    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return true
        case .notAlive: return false
        default: throw reply.unexpected()
        }
    }
}

/// `resume`: picks a session up again if it is alive and the caller's.
struct ResumeFunction: SessionFunction {
    enum Result: Sendable {
        case resumed(inactiveMilliseconds: Int, timer: String, lastSeen: Int, now: Int, record: SessionRecord)
        case notFound
    }

    static let name = "resume"
    let sessionKey: String
    let user: String?
    let resumeThreshold: Duration
    let eventsChannel: String
    /// Whoever the session's user is (the id alone is the credential).
    var anyUser = false

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        [.string(user ?? ""), .integer(resumeThreshold.wholeMilliseconds), .string(eventsChannel), .string(anyUser ? "1" : "0")]
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok:
            return .resumed(
                inactiveMilliseconds: try reply.int(0), timer: try reply.string(1), lastSeen: try reply.int(2), now: try reply.int(3),
                record: SessionRecord(try reply.array(4)))
        case .notFound: return .notFound
        default: throw reply.unexpected()
        }
    }
}

/// `get` (read-only): the session as it is.
struct GetFunction: SessionFunction {
    struct Snapshot: Sendable {
        let millisecondsLeft: Int
        let lastSeen: Int
        let now: Int
        let record: SessionRecord
    }

    static let name = "get"
    static let isReadOnly = true
    let sessionKey: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [] }

    /// Nil when the session is not alive.
    func decode(_ reply: RESPReply) throws(SessionError) -> Snapshot? {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok:
            return Snapshot(
                millisecondsLeft: try reply.int(0), lastSeen: try reply.int(1), now: try reply.int(2),
                record: SessionRecord(try reply.array(3)))
        case .notAlive: return nil
        default: throw reply.unexpected()
        }
    }
}

/// `rotate`: the session under a new id of the same bucket.
struct RotateFunction: SessionFunction {
    enum Result: Sendable {
        case rotated(timer: String, now: Int, record: SessionRecord)
        case notAlive
        case exists
        /// The session is being bound to its user (``SessionError/bindingInProgress``).
        case binding
    }

    static let name = "rotate"
    let sessionKey: String
    let newSessionKey: String
    let eventsChannel: String

    var keys: [RESPArgument] { [.string(sessionKey), .string(newSessionKey)] }
    var arguments: [RESPArgument] { [.string(eventsChannel)] }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return .rotated(timer: try reply.string(0), now: try reply.int(1), record: SessionRecord(try reply.array(2)))
        case .notAlive: return .notAlive
        case .exists: return .exists
        case .binding: return .binding
        default: throw reply.unexpected()
        }
    }
}

/// `delete`: ends one session now (retired for its hook in listener mode).
struct DeleteFunction: SessionFunction {
    static let name = "delete"
    let sessionKey: String
    let eventsChannel: String
    let indexLifetimeMilliseconds: Int

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.string(eventsChannel), .integer(indexLifetimeMilliseconds)] }

    /// Whether a live session was ended.
    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return true
        case .notFound: return false
        default: throw reply.unexpected()
        }
    }
}

/// `delete_user`: ends every session of a user, atomically.
struct DeleteUserFunction: SessionFunction {
    struct Result: Sendable {
        /// Live sessions this call ended.
        var ended: Int
        /// Entries still in the user's index: call again while above 0.
        var left: Int
    }

    static let name = "delete_user"
    /// Sessions one call visits: about 20 µs of Redis's time each, so a call stays near 2 ms
    /// whatever the user has (one call for 200,000 sessions held Redis 4 s).
    static let batch = 100
    let userIndexKey: String
    let user: String
    let eventsChannel: String
    let indexLifetimeMilliseconds: Int

    var keys: [RESPArgument] { [.string(userIndexKey)] }
    var arguments: [RESPArgument] {
        [.string(eventsChannel), .integer(indexLifetimeMilliseconds), .integer(Self.batch), .string(user)]
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
        return Result(ended: try reply.int(0), left: try reply.int(1))
    }
}

/// `end_device`: ends the user's session that a handle names (``DeviceSession/handle``).
struct EndDeviceFunction: SessionFunction {
    static let name = "end_device"
    let userIndexKey: String
    let handle: String
    let eventsChannel: String
    let indexLifetimeMilliseconds: Int
    /// The most index entries the call looks at.
    let scan: Int

    var keys: [RESPArgument] { [.string(userIndexKey)] }
    var arguments: [RESPArgument] {
        [.string(eventsChannel), .integer(indexLifetimeMilliseconds), .string(handle), .integer(scan)]
    }

    /// Whether a live session was ended.
    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
        return try reply.int(0) == 1
    }
}

// MARK: Binding an anonymous session to a user

/// `bind_begin`: marks the anonymous session and returns what it holds.
struct BindBeginFunction: SessionFunction {
    enum Result: Sendable {
        /// `newID` is the id every bind of this session uses: the one given, or that of a bind
        /// under way.
        case marked(timerExpiry: Int, lastSeen: Int, fields: [RESPReply], messages: [RESPReply], newID: String)
        /// A bind of this session finished less than a minute ago, to `newID`.
        case bound(newID: String)
        case notAlive
        case notAnonymous
    }

    static let name = "bind_begin"
    /// How long a bind's mark holds the session (writes refused, other binds converging on it):
    /// far longer than the two calls that follow take, short enough that an interrupted bind
    /// does not leave the session read-only for long.
    static let markLifetime = Duration.seconds(30)
    let sessionKey: String
    let newID: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.string(newID), .integer(Self.markLifetime.wholeMilliseconds)] }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok:
            return .marked(
                timerExpiry: try reply.int(0), lastSeen: try reply.int(1), fields: try reply.array(2), messages: try reply.array(3),
                newID: try reply.string(4))
        case .notAlive: return .notAlive
        case .notAnonymous: return .notAnonymous
        case .bound: return .bound(newID: try reply.string(0))
        default: throw reply.unexpected()
        }
    }
}

/// `bind_place`: writes the session under its new id in the user's bucket.
struct BindPlaceFunction: SessionFunction {
    enum Result: Sendable {
        case placed(timer: String, now: Int)
        case exists
        case notAlive
    }

    static let name = "bind_place"
    let sessionKey: String
    let user: String
    let oldID: String
    let timerExpiry: Int
    let lastSeen: Int
    let retention: DataRetention
    let fields: [RESPReply]
    let messages: [RESPReply]

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        var arguments: [RESPArgument] = [
            .string(user), .string(oldID), .integer(timerExpiry), .integer(lastSeen), .integer(retention.warningLeadMilliseconds),
            .integer(retention.indexLifetimeMilliseconds), .integer(fields.count / 2),
        ]
        for value in fields.prefix(fields.count & ~1) + messages {
            if case .bulkString(let bytes) = value {
                arguments.append(.buffer(bytes))
            } else {
                arguments.append(.string(value.string ?? ""))
            }
        }
        return arguments
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return .placed(timer: try reply.string(0), now: try reply.int(1))
        case .exists: return .exists
        case .notAlive: return .notAlive
        default: throw reply.unexpected()
        }
    }
}

/// `cap_user`: a user's session cap, applied once a bind finished (a bind that fails ends none of
/// the user's other sessions).
struct CapUserFunction: SessionFunction {
    static let name = "cap_user"
    /// The session the user keeps (the bound one).
    let sessionKey: String
    let user: String
    let maxSessionsPerUser: Int
    let eventsChannel: String
    let indexLifetimeMilliseconds: Int

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] {
        [.string(user), .integer(maxSessionsPerUser), .string(eventsChannel), .integer(indexLifetimeMilliseconds)]
    }

    /// How many sessions ended.
    func decode(_ reply: RESPReply) throws(SessionError) -> Int {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
        return try reply.int(0)
    }
}

/// `bind_finish`: removes the anonymous session once its data lives under the new id.
struct BindFinishFunction: SessionFunction {
    static let name = "bind_finish"
    let sessionKey: String
    let newID: String
    let eventsChannel: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.string(newID), .string(eventsChannel)] }

    enum Result: Sendable {
        /// The anonymous session is gone; its data lives under the new id (this bind, or another
        /// converging on the same id, removed it).
        case finished
        /// It is gone, not by a bind to this id.
        case notFound
        /// It ended or was deleted meanwhile.
        case notAlive
        /// It is marked for another id now (after this bind's mark lapsed).
        case other
        /// Its mark lapsed: it may have taken writes the new session lacks, so it stays.
        case lapsed
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return .finished
        case .notFound: return .notFound
        case .notAlive: return .notAlive
        case .lapsed: return .lapsed
        case .other: return .other
        default: throw reply.unexpected()
        }
    }
}

/// `bind_undo`: removes the copy a bind placed when its finish found the mark lapsed.
struct BindUndoFunction: SessionFunction {
    static let name = "bind_undo"
    let sessionKey: String
    let oldID: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [.string(oldID)] }

    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return true
        case .notFound: return false
        default: throw reply.unexpected()
        }
    }
}

/// `import_redeem`: hands out the session imported under a former id; the same one again within
/// the grace, then nothing.
struct ImportRedeemFunction: SessionFunction {
    static let name = "import_redeem"
    let pointerKey: String
    let grace: Duration
    let spentLifetime: Duration

    var keys: [RESPArgument] { [.string(pointerKey)] }
    var arguments: [RESPArgument] { [.integer(grace.wholeMilliseconds), .integer(spentLifetime.wholeMilliseconds)] }

    /// The imported session's id; nil when there is none to hand out.
    func decode(_ reply: RESPReply) throws(SessionError) -> String? {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return try reply.string(0)
        case .notFound: return nil
        default: throw reply.unexpected()
        }
    }
}
