import Testing

@testable import HiredisNIO

/// How the client paces its tries against Redis: never in lockstep, never in a busy loop.
@Suite("Retry pacing")
struct RetryPacingTests {
    /// Every wait before trying again is a random share of the back-off, between half and all of
    /// it, so that app servers that lost Redis together do not come back together.
    @Test func waitsAreSpreadBetweenHalfAndAllOfTheBackOff() {
        let delay = Duration.milliseconds(100)
        let samples = (0..<1_000).map { _ in delay.jittered }
        #expect(samples.allSatisfy { $0 >= .milliseconds(50) && $0 <= delay })
        // Spread out: both halves of the range are used.
        #expect(samples.contains { $0 < .milliseconds(70) } && samples.contains { $0 > .milliseconds(80) })
        #expect(Duration.zero.jittered == .zero)
        #expect(Duration.seconds(30).nanoseconds == 30_000_000_000)
    }

    /// A zero interval or delay would make the client hammer Redis in a loop: refused up front.
    @Test(
        arguments: [
            { (configuration: inout HiredisConfiguration) in configuration.topologyRefreshInterval = .zero },
            { (configuration: inout HiredisConfiguration) in configuration.reconnectInitialDelay = .zero },
            { (configuration: inout HiredisConfiguration) in configuration.reconnectMaximumDelay = .milliseconds(1) },
        ] as [@Sendable (inout HiredisConfiguration) -> Void])
    func intervalsThatWouldSpinAreRefused(change: @Sendable (inout HiredisConfiguration) -> Void) {
        var configuration = HiredisConfiguration(host: "127.0.0.1", port: 6379)
        change(&configuration)
        #expect(throws: HiredisError.self) { try configuration.validate() }
        #expect(throws: Never.self) { try HiredisConfiguration(host: "127.0.0.1", port: 6379).validate() }
    }
}
