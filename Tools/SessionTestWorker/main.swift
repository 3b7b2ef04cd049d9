// A helper process for the tests: an app-server instance of its own, so that tests can run
// several and SIGKILL one.
//
//   session-test-worker expiry-hang PORT NAMESPACE LEASE_MS [BUCKETS]
//       an ExpiryListener whose hook announces the session on `worker:hook-started`, then hangs
//   session-test-worker lock-increment PORT NAMESPACE SESSION TABS COUNT
//       TABS tasks, each doing COUNT read-modify-write increments of metadata "counter" under the lock
//   session-test-worker lock-hold PORT NAMESPACE SESSION LEASE_MS
//       takes the session's lock (renewing it) and holds it until killed
//   session-test-worker clock-probe PORT NAMESPACE BUCKETS
//       (run under faketime) prints "clock <local unix ms>", creates a session with a 1.5 s idle
//       timeout ("created <id>"), touches it after 300 ms ("touched"), and runs an expiry listener
//       whose hook prints "hook <id> <reason> <expiredAt unix ms>"
//
// Each prints "ready" once set up, and "done" when finished.
import EmbeddedRedis
import Foundation
import HiredisNIO
import SessionCache

func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

// Standard output is the protocol with the test: the libraries' warnings go to standard error.
ToolLogging.bootstrap()

let arguments = CommandLine.arguments
guard arguments.count >= 4, let port = Int(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: see the comment at the top of main.swift\n".utf8))
    exit(2)
}
let client = try HiredisClient(configuration: HiredisConfiguration(host: "127.0.0.1", port: port))
Task { try? await client.run() }
var storeConfiguration = SessionStoreConfiguration(namespace: arguments[3])
storeConfiguration.expiryListener = true
if arguments[1] == "expiry-hang", arguments.count > 5, let buckets = Int(arguments[5]) { storeConfiguration.bucketCount = buckets }
if arguments[1] == "clock-probe", arguments.count > 4, let buckets = Int(arguments[4]) { storeConfiguration.bucketCount = buckets }
let store = try SessionStore(client: client, configuration: storeConfiguration)

switch arguments[1] {
case "expiry-hang":
    var configuration = ExpiryListenerConfiguration()
    configuration.claimLease = .milliseconds(Int(arguments[4]) ?? 1000)
    let listener = ExpiryListener(store: store, configuration: configuration) { expired in
        _ = try await client.publish(.string(expired.session.id), to: "worker:hook-started")
        try await Task.sleep(for: .seconds(3600))
    }
    let run = Task { try await listener.run() }
    say("ready")
    _ = try await run.value

case "lock-increment":
    let id = arguments[4]
    let tabs = Int(arguments[5]) ?? 8
    let count = Int(arguments[6]) ?? 500
    let locks = SessionLock(store: store)
    Task { try? await locks.run() }
    say("ready")
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<tabs {
            group.addTask {
                for _ in 0..<count {
                    try await locks.withLock(id, timeout: .seconds(60)) { lease in
                        let value = try await store.metadata(id)["counter"]?.numberValue ?? 0
                        try await store.setMetadata(id, key: "counter", value: .number(value + 1), lease: lease)
                    }
                }
            }
        }
        try await group.waitForAll()
    }
    say("done")

case "lock-hold":
    var configuration = SessionLockConfiguration()
    configuration.lease = .milliseconds(Int(arguments[5]) ?? 1000)
    let locks = SessionLock(store: store, configuration: configuration)
    Task { try? await locks.run() }
    try await locks.withLock(arguments[4]) { _ in
        say("held")
        try await Task.sleep(for: .seconds(3600))
    }

case "clock-probe":
    say("clock \(Int(Date().timeIntervalSince1970 * 1000))")
    var configuration = ExpiryListenerConfiguration()
    configuration.sweepInterval = .milliseconds(20)
    configuration.fullSweepInterval = .milliseconds(200)
    let listener = ExpiryListener(store: store, configuration: configuration) { expired in
        say("hook \(expired.session.id) \(expired.reason.rawValue) \(Int(expired.expiredAt.timeIntervalSince1970 * 1000))")
    }
    let run = Task { try await listener.run() }
    let session = try await store.create(user: "skewed", metadata: ["probe": true], mode: .custom(.milliseconds(1500)))
    say("created \(session.id)")
    try await Task.sleep(for: .milliseconds(300))
    try await store.touch(session.id)
    say("touched")
    _ = try await run.value

default:
    exit(2)
}
