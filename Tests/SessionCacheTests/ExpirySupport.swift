@_spi(Testing) import EmbeddedRedis
import Foundation
import HiredisNIO
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SessionCache
import Testing

/// Collects what cleanup hooks receive, and lets a test await a number of distinct sessions.
final class HookRecorder: Sendable {
    private struct State: Sendable {
        var calls: [String: [ExpiredSession]] = [:]
        var waiters: [(count: Int, continuation: CheckedContinuation<Bool, Never>)] = []
    }

    private let state = NIOLockedValueBox(State())  // a pthread mutex: ThreadSanitizer sees it

    @Sendable func record(_ expired: ExpiredSession) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            state.calls[expired.session.id, default: []].append(expired)
            let distinct = state.calls.count
            let ready = state.waiters.filter { $0.count <= distinct }.map(\.continuation)
            state.waiters.removeAll { $0.count <= distinct }
            return ready
        }
        for continuation in ready { continuation.resume(returning: true) }
    }

    var calls: [String: [ExpiredSession]] { state.withLockedValue { $0.calls } }

    /// Waits until hooks ran for `count` distinct sessions; false after `timeout`.
    func wait(forSessions count: Int, timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let done = self.state.withLockedValue { state in
                        if state.calls.count >= count { return true }
                        state.waiters.append((count, continuation))
                        return false
                    }
                    if done { continuation.resume(returning: true) }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            // Release a waiter still parked, so that the group can finish.
            let parked = state.withLockedValue { state in
                defer { state.waiters.removeAll() }
                return state.waiters.map(\.continuation)
            }
            for continuation in parked { continuation.resume(returning: false) }
            group.cancelAll()
            return first
        }
    }
}

/// A listener running in a service group of its own until stopped.
struct RunningListener: Sendable {
    let task: Task<Void, any Error>
    let group: ServiceGroup
    let client: HiredisClient

    /// A listener on its own client (own connections), for `fixture`'s namespace.
    static func start(
        _ fixture: StoreFixture, configuration: ExpiryListenerConfiguration = fastListener(),
        storeConfiguration: SessionStoreConfiguration? = nil,
        onWarning: ExpiryListener.WarningHook? = nil, onExpiry: @escaping ExpiryListener.Hook
    ) throws -> RunningListener {
        let client = try HiredisClient.started(configuration: fixture.client.configuration)
        let store = try SessionStore(client: client, configuration: storeConfiguration ?? fixture.store.configuration)
        let listener = ExpiryListener(store: store, configuration: configuration, onWarning: onWarning, onExpiry: onExpiry)
        let group = ServiceGroup(services: [listener], logger: Logger(label: "test-listener"))
        return RunningListener(task: Task { try await group.run() }, group: group, client: client)
    }

    /// Graceful shutdown: the listener takes no new sessions and lets running hooks finish.
    func stop() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
        await client.close()
    }
}

func fastListener(lease: Duration = .seconds(10)) -> ExpiryListenerConfiguration {
    var configuration = ExpiryListenerConfiguration()
    configuration.sweepInterval = .milliseconds(20)
    configuration.fullSweepInterval = .milliseconds(200)
    configuration.claimLease = lease
    configuration.hookRetryDelay = .milliseconds(20)
    configuration.registrationLifetime = .seconds(2)
    return configuration
}

/// Every key of the test namespace that belongs to a session.
func sessionKeys(_ fixture: StoreFixture) async throws -> [String] {
    try await fixture.allKeys().filter { $0.hasPrefix("test:{") && $0.contains("}:session:") }
}

/// A store configuration for expiry tests: listener mode.
func listenerConfiguration(_ configuration: inout SessionStoreConfiguration) {
    configuration.expiryListener = true
}
