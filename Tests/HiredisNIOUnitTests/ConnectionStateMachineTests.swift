import Testing

@testable import HiredisNIO

@Suite("ConnectionStateMachine: a connection's life")
struct ConnectionStateMachineTests {
    typealias Machine = ConnectionStateMachine<String>
    let dropped = HiredisError.protocolError("bad reply")
    let peerClosed = HiredisError.connectionLost(reason: "connection closed by peer")

    @Test func activeThenSubscribedThenClosedByUs() {
        var machine = Machine()
        #expect(machine.isOpen && machine.pushSink == nil)
        var started = machine.channelActive()
        #expect(started, "the health check starts once the channel is active")
        started = machine.channelActive()
        #expect(!started, "and only once")
        var installed = machine.enterSubscriberMode("sink")
        #expect(installed && machine.pushSink == "sink")
        guard case .failAllAndCloseChannel(let error) = machine.close(dropped) else {
            Issue.record("closing fails what waits and closes the channel")
            return
        }
        #expect(error.code == dropped.code && !machine.isOpen && machine.pushSink == nil)
        installed = machine.enterSubscriberMode("late")
        #expect(!installed, "a closing connection takes no sink")
        guard case .none = machine.close(peerClosed) else {
            Issue.record("a second close does nothing")
            return
        }
    }

    @Test func theFirstErrorIsTheOneEveryCallerGets() {
        var machine = Machine()
        _ = machine.channelActive()
        _ = machine.close(dropped)
        // Our close completes: the channel goes inactive with a generic reason.
        guard case .failAll(let error) = machine.channelClosed(peerClosed) else {
            Issue.record("what may have slipped in meanwhile is failed with the first error")
            return
        }
        #expect(error.message == dropped.message && machine.closedError?.message == dropped.message)
        guard case .none = machine.channelClosed(peerClosed) else {
            Issue.record("closed is final")
            return
        }
        #expect(machine.closedError?.message == dropped.message)
    }

    @Test func thePeerClosingFailsWhatWaitsWithoutClosingAgain() {
        var machine = Machine()
        _ = machine.channelActive()
        guard case .failAll(let error) = machine.channelClosed(peerClosed) else {
            Issue.record("the channel is already gone: only fail what waits")
            return
        }
        #expect(error.message == peerClosed.message && !machine.isOpen)
        guard case .none = machine.close(dropped) else {
            Issue.record("closing a closed connection does nothing")
            return
        }
        #expect(machine.closedError?.message == peerClosed.message)
    }

    @Test func aHandlerRemovedBeforeActivationCloses() {
        var machine = Machine()
        guard case .failAll = machine.channelClosed(.connectionLost(reason: "handler removed")) else {
            Issue.record("initialized → closed")
            return
        }
        let started = machine.channelActive()
        #expect(!started && !machine.isOpen)
    }
}
