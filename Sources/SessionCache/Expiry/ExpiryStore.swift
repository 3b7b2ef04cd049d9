import HiredisNIO

/// What the expiry listener needs of a store, and nothing more: the expiry functions on a bucket,
/// the listeners' registry, and where notifications come from.
struct ExpiryStore: Sendable {
    let keyspace: SessionKeyspace
    let redis: HiredisClient
    let eventsChannel: String
    let warningLead: Duration?
    let indexLifetime: Duration
    let isListenerMode: Bool

    init(_ store: SessionStore) {
        keyspace = store.keyspace
        redis = store.redis
        eventsChannel = store.eventsChannel
        warningLead = store.configuration.expiryWarningLead
        indexLifetime = store.configuration.indexLifetime
        isListenerMode = store.configuration.expiryListener
    }

    /// How many buckets one call takes at most (a call runs alone in Redis: keep each short).
    static let bucketsPerCall = 128

    func claim(
        _ requests: [ClaimFunction.Request], owner: String, maximum: Int, total: Int, lease: Duration
    ) async throws -> ClaimFunction.Outcome {
        try await redis.call(
            ClaimFunction(
                keyspace: keyspace, requests: requests, owner: owner, maximum: maximum, total: total, lease: lease,
                warningLead: warningLead, indexLifetimeMilliseconds: indexLifetime.wholeMilliseconds))
    }

    func renew(_ sessions: [(bucket: Int, ids: [String])], owner: String, lease: Duration) async throws -> Set<String> {
        try await redis.call(RenewFunction(keyspace: keyspace, owner: owner, lease: lease, sessions: sessions))
    }

    func finalize(_ sessions: [(bucket: Int, items: [FinalizeFunction.Item])], owner: String) async throws -> [FinalizeFunction.Outcome] {
        try await redis.call(FinalizeFunction(keyspace: keyspace, owner: owner, eventsChannel: eventsChannel, sessions: sessions))
    }

    /// A session's data as it ended: its hash (empty when gone) and its messages. Plain commands in
    /// one round trip for all: a claimed session does not change any more.
    func data(of ids: [String]) async throws -> [(record: SessionRecord, messages: [RESPReply])] {
        guard !ids.isEmpty else { return [] }
        var commands: [RESPCommand] = []
        commands.reserveCapacity(ids.count * 2)
        for id in ids {
            commands.append(RESPCommand("HGETALL", .string(keyspace.session(id))))
            commands.append(RESPCommand("LRANGE", .string(keyspace.messages(id)), 0, -1))
        }
        let replies = try await redis.pipeline(commands)
        return stride(from: 0, to: replies.count, by: 2).map { index in
            (SessionRecord(replies[index].array ?? []), replies[index + 1].array ?? [])
        }
    }

    /// Registers (or with `.zero` unregisters) a listener; returns the live ones.
    func register(token: String, lifetime: Duration) async throws -> [String] {
        try await redis.call(ListenersFunction(registryKey: keyspace.listeners, token: token, lifetime: lifetime))
    }

    func partner(of id: String) async throws -> PartnerFunction.Result {
        try await redis.call(PartnerFunction(sessionKey: keyspace.session(id)))
    }
}
