import HiredisNIO

/// Where a store's sessions live in Redis: every key and field name, defined once.
///
/// Sessions are spread over ``bucketCount`` buckets. Every key of a bucket carries the bucket as
/// its hash tag (`<namespace>:{<bucket>}:...`), so it lives in one Redis Cluster slot and every
/// store operation is one atomic function call on one slot. A user's sessions all live in the
/// user's bucket (`crc16(user) mod bucketCount`), so listing them or ending them all is one call
/// too; a session id carries its bucket in its first three characters. The README's "Keys in
/// Redis" shows the layout with redis-cli examples; `sessions.lua` derives the same names.
///
/// The bucket count is part of the data's layout: every instance of a namespace must use the same
/// one, and it cannot change while sessions exist.
public struct SessionKeyspace: Sendable, Hashable {
    /// The most buckets a keyspace may have: 3 characters of URL-safe base64.
    public static let maximumBucketCount = 1 << 18

    /// The prefix of every key (`<namespace>:`), so that applications can share one Redis.
    public let namespace: String
    /// How many buckets sessions are spread over.
    public let bucketCount: Int

    /// A keyspace; throws for a namespace that is empty, longer than 64 bytes or contains anything
    /// but letters, digits and `_ - . :`, or a bucket count outside 1...``maximumBucketCount``.
    public init(namespace: String, bucketCount: Int) throws(SessionError) {
        let allowed = namespace.utf8.allSatisfy { byte in
            SessionID.isAlphanumeric(byte) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
        guard !namespace.isEmpty, namespace.utf8.count <= 64, allowed else {
            throw .invalidConfiguration("namespace must be 1 to 64 letters, digits, '_', '-', '.' or ':'")
        }
        guard (1...Self.maximumBucketCount).contains(bucketCount) else {
            throw .invalidConfiguration("bucketCount must be between 1 and \(Self.maximumBucketCount)")
        }
        self.namespace = namespace
        self.bucketCount = bucketCount
    }

    // MARK: Buckets

    /// The bucket of a user's sessions: `crc16(user) mod bucketCount`.
    public func bucket(ofUser user: String) -> Int {
        Int(HashSlot.crc16(user.utf8)) % bucketCount
    }

    /// The bucket a session id names; nil when the id is not one this keyspace issues.
    public func bucket(ofSession id: String) -> Int? {
        guard let bucket = SessionID.bucket(of: id), bucket < bucketCount else { return nil }
        return bucket
    }

    /// `<namespace>:{<bucket>}:`, the start of every key of a bucket.
    public func prefix(bucket: Int) -> String { key(bucket: bucket) }

    /// `<namespace>:{<bucket>}:` + `first` + `second` (+ `:<tab>`), in one allocation: keys are
    /// built on every call, and each `+` or interpolation allocated a string of its own.
    private func key(bucket: Int, _ first: String = "", _ second: String = "", _ third: String = "", tab: String? = nil) -> String {
        let bucket = String(bucket)  // a small string: no allocation
        var key = ""
        key.reserveCapacity(
            namespace.utf8.count + bucket.utf8.count + 3 + first.utf8.count + second.utf8.count + third.utf8.count
                + (tab.map { $0.utf8.count + 1 } ?? 0))
        key += namespace
        key += ":{"
        key += bucket
        key += "}:"
        key += first
        key += second
        key += third
        if let tab {
            key += ":"
            key += tab
        }
        return key
    }

    // MARK: A session's keys (the id must be well formed)

    /// `<ns>:{b}:session:<id>`: the session hash (fields: ``Field``).
    public func session(_ id: String) -> String { key(bucket: SessionID.bucket(of: id) ?? 0, "session:", id) }
    /// `<ns>:{b}:session:<id>:messages`: the recent messages, oldest first, `<role> <ms> <content>`.
    public func messages(_ id: String) -> String { key(bucket: SessionID.bucket(of: id) ?? 0, "session:", id, ":messages") }
    /// `<ns>:{b}:session:<id>:timer:<idle ms>:<deadline ms>`: the idle timer. It exists while the
    /// session is alive and its TTL is the session's; its value is the last heartbeat (ms). Its name
    /// carries the session's timing, so that a touch needs no read.
    public func timer(_ id: String, idleMilliseconds: Int, deadline: Int) -> String {
        session(id) + ":timer:\(idleMilliseconds):\(deadline)"
    }
    /// A `SCAN MATCH` pattern for a session's timer.
    public func timerPattern(_ id: String) -> String { session(id) + ":timer:*" }
    /// `<ns>:{b}:session:<id>:lock[:<tab>]`: the lock holder's token, the lease as TTL; with
    /// `:queue` (waiters by arrival) and `:seen` (when each last asked).
    public func lock(_ id: String, tab: String? = nil) -> String {
        key(bucket: SessionID.bucket(of: id) ?? 0, "session:", id, ":lock", tab: tab)
    }

    // MARK: A bucket's keys

    /// `<ns>:{b}:deadlines`: sessions scored by their earliest possible end (ms); the expiry
    /// listener visits them. Members are ``deadlineEntry(_:idleMilliseconds:deadline:)``.
    public func deadlines(bucket: Int) -> String { prefix(bucket: bucket) + "deadlines" }
    /// A session's member in its bucket's deadlines: `<id>:<idle ms>:<deadline ms>`, naming its
    /// timer, so that a visit learns which due sessions ended from one MGET of their timers.
    public func deadlineEntry(_ id: String, idleMilliseconds: Int, deadline: Int) -> String { "\(id):\(idleMilliseconds):\(deadline)" }
    /// `<ns>:{b}:warnings`: session ids scored by when their expiry warning is due (ms).
    public func warnings(bucket: Int) -> String { prefix(bucket: bucket) + "warnings" }
    /// `<ns>:{b}:claims`: sessions whose cleanup hook runs, scored by the end of the claim lease (ms).
    public func claims(bucket: Int) -> String { prefix(bucket: bucket) + "claims" }
    /// `<ns>:{b}:users`: user → how many of the user's sessions are indexed.
    public func users(bucket: Int) -> String { prefix(bucket: bucket) + "users" }
    /// `<ns>:{b}:stats`: `created`, `ended`, `ended_lifetime_ms` of the bucket's sessions.
    public func stats(bucket: Int) -> String { prefix(bucket: bucket) + "stats" }
    /// `<ns>:{b}:lock-wakeups`: the sharded pub/sub channel on which a lock release names the next waiter.
    public func lockWakeups(bucket: Int) -> String { prefix(bucket: bucket) + "lock-wakeups" }
    /// `<ns>:{b}:user:<user>`: the user's session ids, scored by their last write (ms).
    public func userSessions(_ user: String) -> String { prefix(bucket: bucket(ofUser: user)) + "user:" + user }
    /// `<ns>:{b}:imported:<former id>`: the id of a session imported from another session system
    /// (``SessionStore/importSession(_:)``), under the id that system gave out; `spent:<id>:<ms>`
    /// once a request presented the former id (``SessionStore/redeemImported(_:)``). Its bucket is
    /// `crc16(former id) mod bucketCount`.
    public func importedSession(formerID: String) -> String {
        prefix(bucket: bucket(ofUser: formerID)) + "imported:" + formerID
    }

    // MARK: Namespace-wide

    /// `<ns>:events`: the pub/sub channel of lifecycle events.
    public var events: String { "\(namespace):events" }
    /// `<ns>:{listeners}`: the expiry listeners that share the buckets, scored by when their
    /// registration ends (ms).
    public var listeners: String { "\(namespace):{listeners}" }
    /// The keyspace-notification pattern of the store's timers in database `database`.
    public func timerNotificationPattern(database: Int) -> String {
        "__keyspace@\(database)__:\(namespace):{*}:session:*:timer:*"
    }

    /// The idle timeout and absolute deadline (ms) a timer's name carries.
    public func timing(ofTimer key: String) -> (idleMilliseconds: Int, deadline: Int)? {
        let parts = key.split(separator: ":")
        guard parts.count >= 3, parts[parts.count - 3] == "timer", let idle = Int(parts[parts.count - 2]),
            let deadline = Int(parts[parts.count - 1])
        else { return nil }
        return (idle, deadline)
    }

    /// The bucket and session id of a timer key of this keyspace (from a keyspace notification).
    public func parseTimer(_ key: Substring) -> (bucket: Int, id: String)? {
        let parts = key.split(separator: ":", omittingEmptySubsequences: false)
        // <namespace...>:{<bucket>}:session:<id>:timer:<idle>:<deadline>
        guard parts.count >= 7, parts[parts.count - 3] == "timer", parts[parts.count - 5] == "session",
            parts[..<(parts.count - 6)].joined(separator: ":") == namespace
        else { return nil }
        let tag = parts[parts.count - 6]
        guard tag.hasPrefix("{"), tag.hasSuffix("}"), let bucket = Int(tag.dropFirst().dropLast()) else { return nil }
        let id = String(parts[parts.count - 4])
        guard self.bucket(ofSession: id) == bucket else { return nil }
        return (bucket, id)
    }

    /// The bucket named by a keyspace notification's channel for one of this keyspace's timers
    /// (`__keyspace@<db>__:<namespace>:{<bucket>}:session:<id>:timer:...`), read from its bytes
    /// without building strings: the expiry listener reads one per expired session.
    public func bucket<Bytes: Collection<UInt8>>(ofTimerNotification channel: Bytes) -> Int? {
        // Past "__keyspace@<db>__:" and the namespace, to the "{".
        guard let colon = channel.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        var index = channel.index(after: colon)
        for byte in namespace.utf8 {
            guard index != channel.endIndex, channel[index] == byte else { return nil }
            index = channel.index(after: index)
        }
        for expected in [UInt8(ascii: ":"), UInt8(ascii: "{")] {
            guard index != channel.endIndex, channel[index] == expected else { return nil }
            index = channel.index(after: index)
        }
        var bucket = 0
        var digits = 0
        while index != channel.endIndex, let digit = Int(exactly: channel[index]).map({ $0 - 48 }), (0...9).contains(digit) {
            bucket = bucket * 10 + digit
            digits += 1
            index = channel.index(after: index)
        }
        guard digits > 0, digits <= 6, index != channel.endIndex, channel[index] == UInt8(ascii: "}"), bucket < bucketCount else {
            return nil
        }
        return bucket
    }

    /// The session id named by a keyspace notification's channel for one of this keyspace's
    /// timers (`...:{<bucket>}:session:<id>:timer:...`), or nil. Read from the bytes (the
    /// listener reads one per notification).
    public func session(ofTimerNotification channel: String) -> String? {
        let bytes = channel.utf8
        guard let brace = bytes.firstIndex(of: UInt8(ascii: "}")) else { return nil }
        var index = brace
        for expected in "}:session:".utf8 {
            guard index != bytes.endIndex, bytes[index] == expected else { return nil }
            index = bytes.index(after: index)
        }
        guard let end = bytes[index...].firstIndex(of: UInt8(ascii: ":")), end > index else { return nil }
        return String(channel[index..<end])
    }

    /// The session hash's fields (besides the application's metadata, `meta:<key>`).
    public enum Field {
        public static let user = "user"
        public static let state = "state"
        public static let createdAt = "created_at"
        public static let lastActivity = "last_activity"
        public static let idle = "idle_ms"
        public static let deadline = "deadline_at"
        public static let mode = "mode"
        public static let messageCount = "message_count"
        public static let agentType = "agent_type"
        public static let version = "version"
        public static let size = "size_bytes"
        public static let metadataCount = "meta_count"
        public static let dataUntil = "data_until"
        public static let listener = "listener"
        public static let grace = "grace_ms"
        public static let claimOwner = "claim_owner"
        public static let claimUntil = "claim_until"
        public static let attempts = "attempts"
        public static let warnedFor = "warned_for"
        public static let bindingTo = "binding_to"
        public static let boundFrom = "bound_from"
        /// The last fencing token any lock of the session was granted (``LockLease/fence``).
        public static let fence = "fence"
        /// The device label the application gave the session (``SessionStore/setDevice(_:label:)``).
        public static let device = "device"
        /// Application metadata fields start with this.
        public static let metadataPrefix = "meta:"
    }
}
