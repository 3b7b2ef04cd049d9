import HiredisNIO
import NIOCore

// Typed wrappers of the expiry functions of `sessions.lua`: the listener's claims on ended
// sessions, their renewal and finalization, and the listeners' registry.

/// `claim`: visits a bucket's due entries; claims ended sessions for this listener.
struct ClaimFunction: SessionFunction {
    /// An ended session this listener now holds (its hook runs next).
    struct Claimed: Sendable {
        let id: String
        /// 0 on the first claim; more when a listener died during the hook or a hook gave up.
        let attempt: Int
        let record: SessionRecord
        let messages: [RESPReply]
    }

    /// A live session whose warning is due.
    struct Warned: Sendable {
        let id: String
        let millisecondsLeft: Int
        let record: SessionRecord
    }

    struct Result: Sendable {
        /// Redis's clock when the call ran.
        let now: Int
        /// When the bucket's next entry is due (Redis's clock), or nil when it has none.
        let nextDue: Int?
        let claimed: [Claimed]
        let warned: [Warned]
        /// Sessions whose data was gone before any listener came (the safety TTL ran out).
        let lost: [String]
    }

    static let name = "claim"
    let deadlinesKey: String
    let owner: String
    let maximum: Int
    let lease: Duration
    let warningLead: Duration?
    /// Also return sessions this owner claimed before (after a reply was lost).
    let recover: Bool
    let indexLifetimeMilliseconds: Int

    var keys: [RESPArgument] { [.string(deadlinesKey)] }
    var arguments: [RESPArgument] {
        [
            .string(owner), .integer(maximum), .integer(lease.wholeMilliseconds), .integer(warningLead?.wholeMilliseconds ?? 0),
            recover ? "1" : "0", .integer(indexLifetimeMilliseconds),
        ]
    }

    static func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        guard let parts = reply.array, parts.count == 5, let now = parts[0].int, let next = parts[1].int,
            let claimed = parts[2].array, let warned = parts[3].array, let lost = parts[4].array
        else { throw .corrupted("\(name): unexpected reply \(reply)") }
        return Result(
            now: now, nextDue: next < 0 ? nil : next,
            claimed: try claimed.map { entry throws(SessionError) in
                guard let fields = entry.array, fields.count == 4, let id = fields[0].string, let attempt = fields[1].int,
                    let hash = fields[2].array, let messages = fields[3].array
                else { throw .corrupted("\(name): unexpected claim \(entry)") }
                return Claimed(id: id, attempt: attempt, record: SessionRecord(hash), messages: messages)
            },
            warned: try warned.map { entry throws(SessionError) in
                guard let fields = entry.array, fields.count == 3, let id = fields[0].string, let left = fields[1].int,
                    let hash = fields[2].array
                else { throw .corrupted("\(name): unexpected warning \(entry)") }
                return Warned(id: id, millisecondsLeft: left, record: SessionRecord(hash))
            },
            lost: lost.compactMap(\.string))
    }
}

/// `renew`: extends this owner's claims while their hooks run.
struct RenewFunction: SessionFunction {
    static let name = "renew"
    let deadlinesKey: String
    let owner: String
    let lease: Duration
    let ids: [String]

    var keys: [RESPArgument] { [.string(deadlinesKey)] }
    var arguments: [RESPArgument] { [.string(owner), .integer(lease.wholeMilliseconds)] + ids.map { .string($0) } }

    /// The ids still held (renewed).
    static func decode(_ reply: RESPReply) throws(SessionError) -> Set<String> {
        guard let ids = reply.array else { throw .corrupted("\(name): unexpected reply \(reply)") }
        return Set(ids.compactMap(\.string))
    }
}

/// `finalize`: removes the sessions whose hooks ran, if this owner still holds them.
struct FinalizeFunction: SessionFunction {
    /// What became of one session.
    enum Outcome: String, Sendable {
        /// Removed.
        case done
        /// Nothing left: finalized already (a retry after a lost reply).
        case gone
        /// Another listener holds it now.
        case lost
    }

    /// Why a finalized session ended, as `finalize` records it.
    enum Reason: String, Sendable {
        case idleTimeout = "idle_timeout"
        case absoluteLifetime = "absolute_lifetime"
        case deleted
        /// It lives on under another id (an anonymous session bound to a user): no counters, no event.
        case bound
    }

    static let name = "finalize"
    let deadlinesKey: String
    let owner: String
    let eventsChannel: String
    let sessions: [(id: String, reason: Reason)]

    var keys: [RESPArgument] { [.string(deadlinesKey)] }
    var arguments: [RESPArgument] {
        var arguments: [RESPArgument] = [.string(owner), .string(eventsChannel)]
        for (id, reason) in sessions { arguments += [.string(id), .string(reason.rawValue)] }
        return arguments
    }

    /// One outcome per session, in order.
    static func decode(_ reply: RESPReply) throws(SessionError) -> [Outcome] {
        guard let outcomes = reply.array else { throw .corrupted("\(name): unexpected reply \(reply)") }
        return try outcomes.map { value throws(SessionError) in
            guard let outcome = value.string.flatMap(Outcome.init(rawValue:)) else {
                throw .corrupted("\(name): unexpected outcome \(value)")
            }
            return outcome
        }
    }
}

/// `listeners`: registers an expiry listener and returns the live ones.
struct ListenersFunction: SessionFunction {
    static let name = "listeners"
    let registryKey: String
    let token: String
    /// How long the registration lasts without renewal; `.zero` to leave.
    let lifetime: Duration

    var keys: [RESPArgument] { [.string(registryKey)] }
    var arguments: [RESPArgument] { [.string(token), .integer(lifetime.wholeMilliseconds)] }

    static func decode(_ reply: RESPReply) throws(SessionError) -> [String] {
        guard let tokens = reply.array else { throw .corrupted("\(name): unexpected reply \(reply)") }
        return tokens.compactMap(\.string)
    }
}

/// `partner` (read-only): the state of the other half of an interrupted bind.
struct PartnerFunction: SessionFunction {
    struct Result: Sendable {
        let exists: Bool
        let isAlive: Bool
        /// The id it is being bound to, if it is the anonymous half.
        let bindingTo: String?
    }

    static let name = "partner"
    static let isReadOnly = true
    let sessionKey: String

    var keys: [RESPArgument] { [.string(sessionKey)] }
    var arguments: [RESPArgument] { [] }

    static func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        guard let parts = reply.array, parts.count == 3 else { throw .corrupted("\(name): unexpected reply \(reply)") }
        let binding = parts[2].string ?? ""
        return Result(exists: parts[0].int == 1, isAlive: parts[1].int == 1, bindingTo: binding.isEmpty ? nil : binding)
    }
}
