import Foundation
import HiredisNIO

extension SessionStore {
    /// A session from its hash (`HGETALL` field/value pairs).
    func decodeSession(id: String, fields: [RESPReply]) throws(SessionError) -> Session {
        try decodeSession(id: id, hash: Self.hash(fields))
    }

    /// `HGETALL` field/value pairs as a dictionary.
    static func hash(_ fields: [RESPReply]) -> [String: String] {
        var hash: [String: String] = [:]
        var index = 0
        while index + 1 < fields.count {
            if let field = fields[index].string, let value = fields[index + 1].string { hash[field] = value }
            index += 2
        }
        return hash
    }

    /// A session from its parsed hash.
    func decodeSession(id: String, hash: [String: String]) throws(SessionError) -> Session {
        func milliseconds(_ name: String) throws(SessionError) -> Int {
            guard let text = hash[name], let value = Int(text) else { throw .corrupted("field \(name) is missing or not a number") }
            return value
        }
        guard let user = hash["user"] else { throw .corrupted("field user is missing") }
        var metadata: [String: JSONValue] = [:]
        for (field, value) in hash where field.hasPrefix(MetadataCoding.prefix) {
            metadata[String(field.dropFirst(MetadataCoding.prefix.count))] = MetadataCoding.decode(value) ?? .string(value)
        }
        let idle = try milliseconds("idle_ms")
        return Session(
            id: id, user: user, state: hash["state"].flatMap(SessionState.init(rawValue:)) ?? .active,
            createdAt: Self.date(try milliseconds("created_at")), lastActivity: Self.date(try milliseconds("last_activity")),
            lastSeen: hash["last_seen"].flatMap(Int.init).map(Self.date),
            mode: hash["mode"].flatMap(TimeoutMode.init(storedName:)) ?? .custom(.milliseconds(idle)),
            absoluteDeadline: Self.date(try milliseconds("deadline_at")), messageCount: Int(hash["message_count"] ?? "") ?? 0,
            agentType: hash["agent_type"], version: Int(hash["version"] ?? "") ?? 0, metadata: metadata)
    }
}
