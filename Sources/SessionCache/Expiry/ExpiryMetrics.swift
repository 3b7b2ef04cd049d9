import CoreMetrics

struct ExpiryMetrics: Sendable {
    let lateness: CoreMetrics.Timer
    let claimsLost: Counter
    let claimBatch: Recorder
    let hookFailures: Counter
    let hooksAbandoned: Counter
    let dataLost: Counter
    private let hooksByReason: [ExpiryReason: Counter]

    init(factory: any MetricsFactory) {
        lateness = CoreMetrics.Timer(label: "session.expiry.lateness", factory: factory)
        claimsLost = Counter(label: "session.expiry.claims_lost", factory: factory)
        claimBatch = Recorder(label: "session.expiry.claim_batch", factory: factory)
        hookFailures = Counter(label: "session.expiry.hook_failures", factory: factory)
        hooksAbandoned = Counter(label: "session.expiry.hooks_abandoned", factory: factory)
        dataLost = Counter(label: "session.expiry.data_lost", factory: factory)
        var hooks: [ExpiryReason: Counter] = [:]
        for reason in [ExpiryReason.idleTimeout, .absoluteLifetime, .deleted] {
            hooks[reason] = Counter(label: "session.expiry.hooks", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        hooksByReason = hooks
    }

    func hooks(_ reason: ExpiryReason) -> Counter { hooksByReason[reason]! }
}
