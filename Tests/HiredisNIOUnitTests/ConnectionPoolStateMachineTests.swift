import Testing

@testable import HiredisNIO

/// A stand-in for a connection: the machine only stores it and compares it by identity.
private final class FakeConnection: Sendable, CustomStringConvertible {
    let name: String
    init(_ name: String) { self.name = name }
    var description: String { name }
}

private typealias Machine = ConnectionPoolStateMachine<FakeConnection, Int>

/// 100 ms doubling to at most 1 s: small numbers whose doublings are easy to read.
private let backoff = Machine.Backoff(initial: .milliseconds(100), maximum: .seconds(1))

private let refused = HiredisError.cannotConnect(address: "127.0.0.1:6379", reason: "connection refused")

/// The machine behind a reference, so that its events (mutating methods) can be called inside
/// `#expect` and `#require`, which cannot expand a mutating call on a local value
/// (swiftlang/swift-testing#1360). Its state reads through to the machine.
@dynamicMemberLookup
private final class Pool {
    private var machine: Machine

    init(size: Int) { machine = Machine(size: size, backoff: backoff) }

    subscript<Value>(dynamicMember keyPath: KeyPath<Machine, Value>) -> Value { machine[keyPath: keyPath] }

    func lease(_ waiter: Int) -> Machine.Action { machine.lease(waiter) }
    func lease(_ waiter: Int, preferring slots: Set<Int>) -> Machine.Action { machine.lease(waiter) { slot, _ in slots.contains(slot) } }
    func cancel(_ waiter: Int) -> Bool { machine.cancel(waiter) }
    func warmUp() -> [Int] { machine.warmUp() }
    func connected(slot: Int, _ connection: FakeConnection) -> Machine.Action { machine.connected(slot: slot, connection) }
    func connectFailed(slot: Int, error: HiredisError) -> Machine.Action { machine.connectFailed(slot: slot, error: error) }
    func connectionClosed(_ connection: FakeConnection) -> Machine.Action { machine.connectionClosed(connection) }
    func connectionClosed(slot: Int, _ connection: FakeConnection) -> Machine.Action {
        machine.connectionClosed(slot: slot, connection)
    }
    func backOffEnded(slot: Int) -> Machine.Action { machine.backOffEnded(slot: slot) }
    func shutDown(failingWith error: HiredisError = .clientClosed) -> Machine.Action { machine.shutDown(failingWith: error) }
}

// Action and Slot are not Equatable (connections compare by identity, errors are not Equatable):
// these accessors pull out each case's payload, nil for any other case, so a test can say what it
// expects in one line.
extension ConnectionPoolStateMachine.Action {
    fileprivate var isNone: Bool {
        if case .none = self { return true }
        return false
    }
    fileprivate var used: Connection? {
        if case .use(let connection) = self { return connection }
        return nil
    }
    fileprivate var waitingAndConnecting: [Int]? {
        if case .wait(let slots) = self { return slots }
        return nil
    }
    fileprivate var failure: HiredisError? {
        if case .fail(let error) = self { return error }
        return nil
    }
    fileprivate var connectSlot: Int? {
        if case .connect(let slot) = self { return slot }
        return nil
    }
    fileprivate var resumed: (waiters: [Waiter], connection: Connection)? {
        if case .resume(let waiters, let connection) = self { return (waiters, connection) }
        return nil
    }
    fileprivate var failedAndBackingOff: (waiters: [Waiter], error: HiredisError, slot: Int, delay: Duration)? {
        if case .failAndBackOff(let waiters, let error, let slot, let delay) = self { return (waiters, error, slot, delay) }
        return nil
    }
    fileprivate var closedAndFailed: (close: [Connection], fail: [Waiter], error: HiredisError)? {
        if case .shutDown(let close, let fail, let error) = self { return (close, fail, error) }
        return nil
    }
    fileprivate var closed: Connection? {
        if case .close(let connection) = self { return connection }
        return nil
    }
}

extension ConnectionPoolStateMachine {
    /// Each slot's state by name, to compare whole pools at a glance.
    fileprivate var slotStates: [String] {
        slots.map {
            switch $0 {
            case .idle: return "idle"
            case .connecting: return "connecting"
            case .connected: return "connected"
            case .backingOff: return "backingOff"
            }
        }
    }
}

@Suite("Connection pool state machine")
struct ConnectionPoolStateMachineTests {
    /// Connects every slot of a fresh pool; slot i gets the returned connections[i], named "ci".
    @discardableResult
    private func connectAll(_ pool: Pool) -> [FakeConnection] {
        let connections = pool.slots.indices.map { FakeConnection("c\($0)") }
        #expect(pool.warmUp() == Array(pool.slots.indices))
        for (slot, connection) in connections.enumerated() {
            #expect(pool.connected(slot: slot, connection).isNone)
        }
        return connections
    }

    // MARK: Leasing

    @Test func leaseWithNothingConnectedStartsEveryIdleSlotAndWaits() {
        let pool = Pool(size: 3)
        #expect(pool.lease(1).waitingAndConnecting == [0, 1, 2])
        #expect(pool.waiterCount == 1)
        #expect(pool.slotStates == ["connecting", "connecting", "connecting"])
        // Every slot is already connecting: a second caller waits for those attempts, none more.
        #expect(pool.lease(2).waitingAndConnecting == [])
        #expect(pool.waiterCount == 2)
    }

    @Test func firstConnectionResumesEveryWaiter() throws {
        let pool = Pool(size: 2)
        _ = pool.lease(1)
        _ = pool.lease(2)
        let connection = FakeConnection("c1")
        // Whichever slot connects first answers all the callers waiting so far.
        let resumed = try #require(pool.connected(slot: 1, connection).resumed)
        #expect(resumed.waiters == [1, 2])
        #expect(resumed.connection === connection)
        #expect(pool.waiterCount == 0)
        #expect(pool.slotStates == ["connecting", "connected"])
        // The other slot connecting later has nobody to answer.
        let other = FakeConnection("c0")
        #expect(pool.connected(slot: 0, other).isNone)
        #expect(pool.connections.map(\.name) == ["c0", "c1"])
    }

    @Test func leaseUsesConnectedSlotsRoundRobin() {
        let pool = Pool(size: 3)
        connectAll(pool)
        // Six leases go around the three connections twice, in slot order.
        let used = (0..<6).map { pool.lease($0).used?.name }
        #expect(used == ["c0", "c1", "c2", "c0", "c1", "c2"])
        #expect(pool.waiterCount == 0)
    }

    @Test func roundRobinSkipsSlotsThatAreNotConnected() {
        let pool = Pool(size: 3)
        #expect(pool.warmUp() == [0, 1, 2])
        _ = pool.connected(slot: 0, FakeConnection("c0"))
        _ = pool.connected(slot: 2, FakeConnection("c2"))
        // Slot 1 is still connecting: leases alternate between the two that are up.
        let used = (0..<4).map { pool.lease($0).used?.name }
        #expect(used == ["c0", "c2", "c0", "c2"])
    }

    @Test func leaseGoesRoundRobinOverThePreferredSlotsWhenOneIsConnected() {
        let pool = Pool(size: 4)
        #expect(pool.warmUp() == [0, 1, 2, 3])
        for slot in [0, 1, 3] { _ = pool.connected(slot: slot, FakeConnection("c\(slot)")) }
        // A caller on the event loop of slots 1 and 3 gets those, in turn, never another loop's.
        #expect((0..<4).map { pool.lease($0, preferring: [1, 3]).used?.name } == ["c1", "c3", "c1", "c3"])
        // Its preferred slot not connected (2 is still connecting), or none preferred (all
        // crowded, say): round robin over every connected slot.
        #expect((0..<3).map { pool.lease($0, preferring: [2]).used?.name } == ["c0", "c1", "c3"])
        #expect((0..<3).map { pool.lease($0, preferring: []).used?.name } == ["c0", "c1", "c3"])
        #expect(pool.waiterCount == 0)
    }

    @Test func warmUpStartsOnlyIdleSlots() {
        let pool = Pool(size: 2)
        #expect(pool.warmUp() == [0, 1])
        // Already connecting: warming up again starts nothing twice.
        #expect(pool.warmUp() == [])
        #expect(pool.slotStates == ["connecting", "connecting"])
    }

    @Test func connectionForASlotThatIsNotConnectingIsClosed() {
        let pool = Pool(size: 1)
        let stray = FakeConnection("stray")
        // Nothing asked slot 0 to connect: the pool must not keep (or leak) the connection.
        #expect(pool.connected(slot: 0, stray).closed === stray)
        #expect(pool.connections.isEmpty)
    }

    // MARK: Cancellation

    @Test func cancelledWaiterIsNotResumed() throws {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        _ = pool.lease(2)
        #expect(pool.cancel(1))
        #expect(pool.waiterCount == 1)
        // Gone already, or never there: nothing to cancel.
        #expect(!pool.cancel(1))
        #expect(!pool.cancel(99))
        // The attempt the cancelled caller started still completes, for the remaining waiter.
        let resumed = try #require(pool.connected(slot: 0, FakeConnection("c0")).resumed)
        #expect(resumed.waiters == [2])
    }

    // MARK: Connect failures and back-off

    @Test func connectFailureFailsWaitersAndBacksOff() throws {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        _ = pool.lease(2)
        let outcome = try #require(pool.connectFailed(slot: 0, error: refused).failedAndBackingOff)
        // The waiters asked for the next attempt's outcome: they get its error, not a longer wait.
        #expect(outcome.waiters == [1, 2])
        #expect(outcome.error.code == .cannotConnect)
        #expect(outcome.slot == 0)
        #expect(outcome.delay == .milliseconds(100))
        #expect(pool.waiterCount == 0)
        #expect(pool.slotStates == ["backingOff"])
    }

    @Test func leaseDuringBackOffWaitsWithoutStartingAnAttempt() {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        _ = pool.connectFailed(slot: 0, error: refused)
        // The slot retries by itself when its back-off ends; a caller must not cut it short.
        #expect(pool.lease(2).waitingAndConnecting == [])
        #expect(pool.waiterCount == 1)
        #expect(pool.slotStates == ["backingOff"])
    }

    @Test func backOffEndedReconnectsTheSlot() throws {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        _ = pool.connectFailed(slot: 0, error: refused)
        _ = pool.lease(2)
        #expect(pool.backOffEnded(slot: 0).connectSlot == 0)
        #expect(pool.slotStates == ["connecting"])
        // The caller who came during the back-off gets the retry's connection.
        let connection = FakeConnection("c0")
        let resumed = try #require(pool.connected(slot: 0, connection).resumed)
        #expect(resumed.waiters == [2])
        #expect(resumed.connection === connection)
    }

    @Test func repeatedFailuresDoubleTheDelayUpToTheMaximum() {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        var delays: [Duration] = []
        for _ in 0..<6 {
            delays.append(pool.connectFailed(slot: 0, error: refused).failedAndBackingOff?.delay ?? .zero)
            #expect(pool.backOffEnded(slot: 0).connectSlot == 0)
        }
        // initial × 2^(failures − 1): 100, 200, 400, 800 ms, then capped at 1 s.
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)])
    }

    @Test func backOffDelayFormula() {
        #expect(backoff.delay(afterFailures: 1) == .milliseconds(100))
        #expect(backoff.delay(afterFailures: 2) == .milliseconds(200))
        #expect(backoff.delay(afterFailures: 4) == .milliseconds(800))
        #expect(backoff.delay(afterFailures: 5) == .seconds(1))
        // No failure yet counts as the first; a huge count must not overflow the shift.
        #expect(backoff.delay(afterFailures: 0) == .milliseconds(100))
        #expect(backoff.delay(afterFailures: 1_000) == .seconds(1))
    }

    @Test func failureOfOneSlotFailsWaitersWhileOthersKeepConnecting() throws {
        let pool = Pool(size: 2)
        #expect(pool.lease(1).waitingAndConnecting == [0, 1])
        // The first outcome answers the waiters, even though slot 1 may still succeed.
        let outcome = try #require(pool.connectFailed(slot: 0, error: refused).failedAndBackingOff)
        #expect(outcome.waiters == [1])
        #expect(pool.slotStates == ["backingOff", "connecting"])
        let connection = FakeConnection("c1")
        #expect(pool.connected(slot: 1, connection).isNone)
        #expect(pool.lease(2).used === connection)
    }

    @Test func staleFailureOrBackOffEventIsIgnored() {
        let pool = Pool(size: 1)
        connectAll(pool)
        // Slot 0 is connected: a late failure report or timer must not disturb it.
        #expect(pool.connectFailed(slot: 0, error: refused).isNone)
        #expect(pool.backOffEnded(slot: 0).isNone)
        #expect(pool.slotStates == ["connected"])
    }

    // MARK: Lost connections

    @Test func lostConnectionIsReplacedAtOnce() {
        let pool = Pool(size: 2)
        let connections = connectAll(pool)
        // No back-off before the first reconnect: a server restart costs one round trip, not a delay.
        #expect(pool.connectionClosed(connections[0]).connectSlot == 0)
        #expect(pool.slotStates == ["connecting", "connected"])
        // Meanwhile callers use the connection still up, not the closed one.
        #expect(pool.lease(1).used === connections[1])
        #expect(pool.lease(2).used === connections[1])
        let replacement = FakeConnection("c0'")
        #expect(pool.connected(slot: 0, replacement).isNone)
        #expect(pool.connections.map(\.name) == ["c0'", "c1"])
    }

    @Test func closeOfUnknownOrAlreadyReplacedConnectionIsIgnored() {
        let pool = Pool(size: 1)
        let connections = connectAll(pool)
        #expect(pool.connectionClosed(FakeConnection("other")).isNone)
        #expect(pool.connectionClosed(connections[0]).connectSlot == 0)
        // A second report of the same loss (say, the health check and the channel both noticed)
        // must not start a second attempt.
        #expect(pool.connectionClosed(connections[0]).isNone)
        #expect(pool.connectionClosed(slot: 0, connections[0]).isNone)
        #expect(pool.slotStates == ["connecting"])
    }

    @Test func failedReconnectAfterALossStartsTheBackOffAfresh() throws {
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        // Three failures (back-off up to 400 ms), then the server comes back.
        for _ in 0..<3 {
            _ = pool.connectFailed(slot: 0, error: refused)
            _ = pool.backOffEnded(slot: 0)
        }
        let connection = FakeConnection("c0")
        _ = pool.connected(slot: 0, connection)
        #expect(pool.connectionClosed(connection).connectSlot == 0)
        // The success reset the count and a loss is not a failed attempt: the first failed
        // reconnect waits the initial delay (initial × 2^(1 − 1)).
        let outcome = try #require(pool.connectFailed(slot: 0, error: refused).failedAndBackingOff)
        #expect(outcome.delay == .milliseconds(100))
    }

    // MARK: Shutdown

    @Test func shutDownClosesConnections() throws {
        let pool = Pool(size: 2)
        let connections = connectAll(pool)
        let action = try #require(pool.shutDown().closedAndFailed)
        #expect(action.close.map(\.name) == connections.map(\.name))
        #expect(action.fail.isEmpty)
        #expect(action.error.code == .clientClosed)
        #expect(pool.isShutDown)
        #expect(pool.connections.isEmpty)
    }

    @Test func shutDownFailsWaitersWithClientClosed() throws {
        let pool = Pool(size: 2)
        _ = pool.lease(1)
        _ = pool.lease(2)
        let action = try #require(pool.shutDown().closedAndFailed)
        #expect(action.close.isEmpty)
        #expect(action.fail == [1, 2])
        #expect(action.error.code == .clientClosed)
        #expect(pool.waiterCount == 0)
    }

    @Test func leaseAfterShutDownFails() {
        let pool = Pool(size: 1)
        connectAll(pool)
        _ = pool.shutDown()
        // Connections were closed: nobody may get one, and nobody is left waiting forever.
        #expect(pool.lease(1).failure?.code == .clientClosed)
        #expect(pool.waiterCount == 0)
    }

    @Test func aNodeThatLeftTheTopologyFailsItsWaitersAndLaterLeasesWithARetryableError() throws {
        // A cluster node dropped from the map: commands waiting for its connections never went
        // out, so they fail with what the client retries on the new map, not with clientClosed.
        let pool = Pool(size: 1)
        _ = pool.lease(1)
        let left = HiredisError.cannotConnect(address: "127.0.0.1:7001", reason: "the node left the cluster topology")
        let action = try #require(pool.shutDown(failingWith: left).closedAndFailed)
        #expect(action.fail == [1])
        #expect(action.error.code == .cannotConnect)
        #expect(!action.error.commandMayHaveRun)
        let late = try #require(pool.lease(2).failure)
        #expect(late.code == .cannotConnect)
        #expect(late.message.contains("left the cluster topology"))
    }

    @Test func eventsAfterShutDownStartNothing() {
        let pool = Pool(size: 2)
        _ = pool.lease(1)
        _ = pool.connectFailed(slot: 1, error: refused)
        _ = pool.shutDown()
        // An attempt that was in flight succeeds late: the connection is closed, not kept.
        let late = FakeConnection("late")
        #expect(pool.connected(slot: 0, late).closed === late)
        // Nor does a late failure, a back-off timer, a loss or warming up start anything.
        #expect(pool.connectFailed(slot: 0, error: refused).isNone)
        #expect(pool.backOffEnded(slot: 1).isNone)
        #expect(pool.connectionClosed(slot: 0, late).isNone)
        #expect(pool.warmUp() == [])
        // Shutting down twice closes nothing twice.
        #expect(pool.shutDown().isNone)
        #expect(pool.connections.isEmpty)
    }
}
