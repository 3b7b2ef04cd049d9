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

    func claim(bucket: Int, owner: String, maximum: Int, lease: Duration, recover: Bool) async throws -> ClaimFunction.Result {
        try await redis.call(
            ClaimFunction(
                deadlinesKey: keyspace.deadlines(bucket: bucket), owner: owner, maximum: maximum, lease: lease, warningLead: warningLead,
                recover: recover, indexLifetimeMilliseconds: indexLifetime.wholeMilliseconds))
    }

    func renew(bucket: Int, owner: String, lease: Duration, ids: [String]) async throws -> Set<String> {
        try await redis.call(RenewFunction(deadlinesKey: keyspace.deadlines(bucket: bucket), owner: owner, lease: lease, ids: ids))
    }

    func finalize(
        bucket: Int, owner: String, sessions: [(id: String, reason: FinalizeFunction.Reason)]
    ) async throws -> [FinalizeFunction.Outcome] {
        try await redis.call(
            FinalizeFunction(
                deadlinesKey: keyspace.deadlines(bucket: bucket), owner: owner, eventsChannel: eventsChannel, sessions: sessions))
    }

    /// Registers (or with `.zero` unregisters) a listener; returns the live ones.
    func register(token: String, lifetime: Duration) async throws -> [String] {
        try await redis.call(ListenersFunction(registryKey: keyspace.listeners, token: token, lifetime: lifetime))
    }

    func partner(of id: String) async throws -> PartnerFunction.Result {
        try await redis.call(PartnerFunction(sessionKey: keyspace.session(id)))
    }
}
