import Foundation
import HiredisNIO

/// A session hash as Redis returned it (`HGETALL`), and how it becomes a ``Session``.
struct SessionRecord: Sendable {
    typealias Field = SessionKeyspace.Field
    let fields: [String: String]

    init(_ pairs: [RESPReply]) {
        var fields: [String: String] = [:]
        fields.reserveCapacity(pairs.count / 2)
        var index = 0
        while index + 1 < pairs.count {
            if let field = pairs[index].string, let value = pairs[index + 1].string { fields[field] = value }
            index += 2
        }
        self.fields = fields
    }

    subscript(_ field: String) -> String? { fields[field] }

    func milliseconds(_ field: String) throws(SessionError) -> Int {
        guard let text = fields[field], let value = Int(text) else { throw .corrupted("field \(field) is missing or not a number") }
        return value
    }

    var user: String? { fields[Field.user].flatMap { $0.isEmpty ? nil : $0 } }

    /// The session, with its last activity as the server derived it from the timer when known
    /// (`lastActivity`), else as recorded in the hash.
    func session(id: String, lastActivity: Int? = nil, lastSeen: Int? = nil) throws(SessionError) -> Session {
        var metadata: [String: JSONValue] = [:]
        for (field, value) in fields where field.hasPrefix(Field.metadataPrefix) {
            metadata[String(field.dropFirst(Field.metadataPrefix.count))] = MetadataCoding.decode(value) ?? .string(value)
        }
        let idle = try milliseconds(Field.idle)
        let recorded = try milliseconds(Field.lastActivity)
        let activity = max(recorded, lastActivity ?? recorded)
        var state = fields[Field.state].flatMap(SessionState.init(rawValue:)) ?? .active
        // A touch records activity in the timer only: a created session touched since is active.
        if state == .created, activity > recorded { state = .active }
        return Session(
            id: id, user: user, state: state, createdAt: Self.date(try milliseconds(Field.createdAt)), lastActivity: Self.date(activity),
            lastSeen: lastSeen.flatMap { $0 > 0 ? Self.date($0) : nil },
            mode: fields[Field.mode].flatMap(TimeoutMode.init(storedName:)) ?? .custom(.milliseconds(idle)),
            absoluteDeadline: Self.date(try milliseconds(Field.deadline)), messageCount: Int(fields[Field.messageCount] ?? "") ?? 0,
            agentType: fields[Field.agentType], version: Int(fields[Field.version] ?? "") ?? 0, metadata: metadata)
    }

    /// The last activity the timer's TTL implies: `now + left - idle` (exact unless the absolute
    /// deadline capped the timer, when it is a lower bound).
    static func lastActivity(now: Int, left: Int, idle: Int) -> Int { now + left - idle }

    static func date(_ milliseconds: Int) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
