import HiredisNIO
import NIOCore

// Typed wrappers of the expiry functions of `sessions.lua`: the listener's claims on ended
// sessions, their renewal and finalization, and the listeners' registry.

/// `claim`: visits due buckets of one node and claims their ended sessions for this listener.
struct ClaimFunction: SessionFunction {
    /// An ended session this listener now holds (its hook runs next, once its data is read).
    struct Claimed: Sendable {
        let id: String
        /// 0 on the first claim; more when a listener died during the hook or a hook gave up.
        let attempt: Int
    }

    /// A live session whose warning is due.
    struct Warned: Sendable {
        let id: String
        let millisecondsLeft: Int
    }

    /// What one bucket's visit found.
    struct Visit: Sendable {
        let bucket: Int
        /// When the bucket's next entry is due (Redis's clock), or nil when it has none.
        let nextDue: Int?
        let claimed: [Claimed]
        let warned: [Warned]
    }

    struct Outcome: Sendable {
        /// Redis's clock when the call ran.
        let now: Int
        let visits: [Visit]
    }

    static let name = "claim"
    /// One bucket to visit.
    struct Request: Sendable {
        let bucket: Int
        /// Also return this owner's claims (after a reply was lost).
        let recover: Bool
        /// A full visit: also take over claims whose lease ran out.
        let full: Bool
    }

    let keyspace: SessionKeyspace
    let requests: [Request]
    let owner: String
    /// The most sessions claimed in each bucket.
    let maximum: Int
    /// The most sessions claimed in all (buckets are served in order).
    let total: Int
    let lease: Duration
    let warningLead: Duration?
    let indexLifetimeMilliseconds: Int

    var buckets: [Int] { requests.map(\.bucket) }
    var keys: [RESPArgument] { requests.map { .string(keyspace.deadlines(bucket: $0.bucket)) } }
    var arguments: [RESPArgument] {
        let flags = String(requests.map { Character(String(($0.recover ? 1 : 0) + ($0.full ? 2 : 0))) })
        return [
            .string(owner), .integer(maximum), .integer(lease.wholeMilliseconds), .integer(warningLead?.wholeMilliseconds ?? 0),
            .string(flags), .integer(indexLifetimeMilliseconds), .integer(total),
        ]
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Outcome {
        guard let parts = reply.array, parts.count == 2, let now = parts[0].int, let visits = parts[1].array, visits.count == buckets.count
        else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
        var decoded: [Visit] = []
        decoded.reserveCapacity(visits.count)
        for (bucket, visit) in zip(buckets, visits) {
            guard let fields = visit.array, fields.count == 3, let next = fields[0].int, let claimed = fields[1].array,
                let warned = fields[2].array
            else { throw .corrupted("\(Self.name): unexpected visit \(visit)") }
            decoded.append(
                Visit(
                    bucket: bucket, nextDue: next < 0 ? nil : next,
                    claimed: try claimed.map { entry throws(SessionError) in
                        guard let fields = entry.array, fields.count == 2, let id = fields[0].string, let attempt = fields[1].int
                        else { throw .corrupted("\(Self.name): unexpected claim \(entry)") }
                        return Claimed(id: id, attempt: attempt)
                    },
                    warned: try warned.map { entry throws(SessionError) in
                        guard let fields = entry.array, fields.count == 2, let id = fields[0].string, let left = fields[1].int
                        else { throw .corrupted("\(Self.name): unexpected warning \(entry)") }
                        return Warned(id: id, millisecondsLeft: left)
                    }))
        }
        return Outcome(now: now, visits: decoded)
    }
}

/// `renew`: extends this owner's claims while their hooks run.
struct RenewFunction: SessionFunction {
    static let name = "renew"
    let keyspace: SessionKeyspace
    let owner: String
    let lease: Duration
    /// The ids to renew, by bucket.
    let sessions: [(bucket: Int, ids: [String])]

    var keys: [RESPArgument] { sessions.map { .string(keyspace.deadlines(bucket: $0.bucket)) } }
    var arguments: [RESPArgument] {
        var arguments: [RESPArgument] = [.string(owner), .integer(lease.wholeMilliseconds)]
        for (_, ids) in sessions { arguments += [.integer(ids.count)] + ids.map { .string($0) } }
        return arguments
    }

    /// The ids still held (renewed).
    func decode(_ reply: RESPReply) throws(SessionError) -> Set<String> {
        guard let ids = reply.array else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
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
        /// Its data was gone before a listener read it (the safety TTL ran out): no counters, no event.
        case lost
    }

    /// A session to finalize, with what its removal needs from its data.
    struct Item: Sendable {
        let id: String
        let reason: Reason
        let user: String
        let createdAt: Int
    }

    static let name = "finalize"
    let keyspace: SessionKeyspace
    let owner: String
    let eventsChannel: String
    let sessions: [(bucket: Int, items: [Item])]

    var keys: [RESPArgument] { sessions.map { .string(keyspace.deadlines(bucket: $0.bucket)) } }
    var arguments: [RESPArgument] {
        var arguments: [RESPArgument] = [.string(owner), .string(eventsChannel)]
        for (_, items) in sessions {
            arguments.append(.integer(items.count))
            for item in items {
                arguments += [.string(item.id), .string(item.reason.rawValue), .string(item.user), .integer(item.createdAt)]
            }
        }
        return arguments
    }

    /// One outcome per session, in order.
    func decode(_ reply: RESPReply) throws(SessionError) -> [Outcome] {
        guard let outcomes = reply.array else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
        return try outcomes.map { value throws(SessionError) in
            guard let outcome = value.string.flatMap(Outcome.init(rawValue:)) else {
                throw .corrupted("\(Self.name): unexpected outcome \(value)")
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

    func decode(_ reply: RESPReply) throws(SessionError) -> [String] {
        guard let tokens = reply.array else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
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

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        guard let parts = reply.array, parts.count == 3 else { throw .corrupted("\(Self.name): unexpected reply (\(reply.shape))") }
        let binding = parts[2].string ?? ""
        return Result(exists: parts[0].int == 1, isAlive: parts[1].int == 1, bindingTo: binding.isEmpty ? nil : binding)
    }
}
