import HiredisNIO

/// The Redis key names of a namespace: documented in the README ("Keys in Redis").
///
/// Every key of one session carries the id as a hash tag (`{id}`), so they share one Redis Cluster
/// slot and one Lua script may touch them all. The per-user index and the deadline index span
/// sessions; they are hints that readers verify against the session itself.
struct SessionKeys: Sendable {
    let namespace: String

    /// `<ns>:session:{<id>}`: the session hash.
    func data(_ id: String) -> String { "\(namespace):session:{\(id)}" }
    /// `<ns>:session:{<id>}:messages`: the recent messages, oldest first, one JSON object each.
    func messages(_ id: String) -> String { "\(namespace):session:{\(id)}:messages" }
    /// `<ns>:session:{<id>}:alive`: the idle timer. Its TTL is the session's; its expiry is the
    /// session's expiry; its value is the last activity (Unix ms). The data keys live a grace
    /// period longer, for the cleanup hook.
    func alive(_ id: String) -> String { "\(namespace):session:{\(id)}:alive" }
    /// `<ns>:session:{<id>}:claim`: which listener instance runs the session's cleanup hook (lease).
    func claim(_ id: String) -> String { "\(namespace):session:{\(id)}:claim" }
    /// `<ns>:session:{<id>}:lock[:<tab>]`: the lock's owner token, with the lease as TTL;
    /// `...:lock[:<tab>]:queue`: waiters by arrival; `...:lock[:<tab>]:seen`: when each last asked.
    func lock(_ id: String, tab: String?) -> [RESPArgument] {
        let base = "\(namespace):session:{\(id)}:lock" + (tab.map { ":\($0)" } ?? "")
        return [.string(data(id)), .string(alive(id)), .string(base), .string(base + ":queue"), .string(base + ":seen")]
    }
    /// `<ns>:lock:<id>[:<tab>]`: where a release wakes the next waiter (the message is its token).
    func lockChannel(_ id: String, tab: String?) -> String { "\(namespace):lock:\(id)" + (tab.map { ":\($0)" } ?? "") }
    /// The pattern of every lock channel of the namespace.
    var lockChannelPattern: String { "\(namespace):lock:*" }
    /// `<ns>:user:<user>:sessions`: sorted set of the user's session ids, scored by creation (ms).
    func userSessions(_ user: String) -> String { "\(namespace):user:\(user):sessions" }
    /// `<ns>:deadlines`: sorted set of session ids scored by their earliest possible expiry (ms).
    var deadlines: String { "\(namespace):deadlines" }
    /// `<ns>:warnings`: sorted set of session ids scored by when their expiry warning is due (ms).
    var warnings: String { "\(namespace):warnings" }
    /// `<ns>:events`: the pub/sub channel of lifecycle events.
    var events: String { "\(namespace):events" }
    /// `<ns>:users`: sorted set of user ids scored by their last session creation (ms).
    var users: String { "\(namespace):users" }
    /// `<ns>:stats`: counters (sessions created and ended, total lifetime of ended sessions).
    var stats: String { "\(namespace):stats" }

    /// The three keys of one session, in the order every session script takes them.
    func session(_ id: String) -> [RESPArgument] { [.string(data(id)), .string(alive(id)), .string(messages(id))] }

    /// The session's keys and its claim key, for the expiry scripts.
    func sessionAndClaim(_ id: String) -> [RESPArgument] { session(id) + [.string(claim(id))] }

    /// The id of a session key of this namespace (`<ns>:session:{<id>}...`), or nil.
    func sessionID(fromKey key: String) -> String? {
        let prefix = "\(namespace):session:{"
        guard key.hasPrefix(prefix), let close = key.lastIndex(of: "}") else { return nil }
        let id = String(key[key.index(key.startIndex, offsetBy: prefix.count)..<close])
        return SessionID.isWellFormed(id) ? id : nil
    }
}
