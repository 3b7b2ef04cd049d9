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

    // A call spanning several buckets touches several hash slots: fine on one server, refused by
    // a cluster (declared keys must share a slot). On a cluster each bucket gets a call of its
    // own; they go out in one pipeline, which the client splits by node.

    func claim(
        _ requests: [ClaimFunction.Request], owner: String, maximum: Int, total: Int, lease: Duration
    ) async throws -> ClaimFunction.Outcome {
        func function(_ requests: [ClaimFunction.Request], total: Int) -> ClaimFunction {
            ClaimFunction(
                keyspace: keyspace, requests: requests, owner: owner, maximum: maximum, total: total, lease: lease,
                warningLead: warningLead, indexLifetimeMilliseconds: indexLifetime.wholeMilliseconds)
        }
        guard redis.isCluster, requests.count > 1 else { return try await redis.call(function(requests, total: total)) }
        // The budget is shared out; together the calls claim at most `total` (rounded up per bucket).
        let share = max(1, (total + requests.count - 1) / requests.count)
        let outcomes = try await redis.callEach(requests.map { function([$0], total: min(share, total)) })
        return ClaimFunction.Outcome(now: outcomes.map(\.now).max() ?? 0, visits: outcomes.flatMap(\.visits))
    }

    func renew(_ sessions: [(bucket: Int, ids: [String])], owner: String, lease: Duration) async throws -> Set<String> {
        guard redis.isCluster, sessions.count > 1 else {
            return try await redis.call(RenewFunction(keyspace: keyspace, owner: owner, lease: lease, sessions: sessions))
        }
        let held = try await redis.callEach(sessions.map { RenewFunction(keyspace: keyspace, owner: owner, lease: lease, sessions: [$0]) })
        return held.reduce(into: Set<String>()) { $0.formUnion($1) }
    }

    func finalize(_ sessions: [(bucket: Int, items: [FinalizeFunction.Item])], owner: String) async throws -> [FinalizeFunction.Outcome] {
        func function(_ sessions: [(bucket: Int, items: [FinalizeFunction.Item])]) -> FinalizeFunction {
            FinalizeFunction(keyspace: keyspace, owner: owner, eventsChannel: eventsChannel, sessions: sessions)
        }
        guard redis.isCluster, sessions.count > 1 else { return try await redis.call(function(sessions)) }
        return try await redis.callEach(sessions.map { function([$0]) }).flatMap { $0 }
    }

    /// A session's data as it ended: its hash (empty when gone) and its messages. Plain commands in
    /// one round trip for all: a claimed session does not change any more.
    func data(of ids: [String]) async throws -> [(record: SessionRecord, messages: [RESPReply])] {
        guard !ids.isEmpty else { return [] }
        let reads = ids.map { (HGETALL(keyspace.session($0)), LRANGE(keyspace.messages($0))) }
        var commands: [RESPCommand] = []
        commands.reserveCapacity(ids.count * 2)
        for (hash, messages) in reads { commands += [hash.command, messages.command] }
        let replies = try await redis.pipeline(commands)
        // A key that holds something else (overwritten by hand) reads as gone: its session is
        // finalized as one whose data was lost, instead of failing every visit after.
        return reads.indices.map { index in
            let (hash, messages) = reads[index]
            return (
                SessionRecord((try? hash.decode(replies[2 * index])) ?? []), (try? messages.decode(replies[2 * index + 1])) ?? []
            )
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
