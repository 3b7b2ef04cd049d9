// A helper process for the tests: an ExpiryListener in a process of its own, so that a test can
// SIGKILL an instance in the middle of a hook.
//
//   session-test-worker expiry-hang PORT NAMESPACE LEASE_MS
//
// Runs a listener whose hook announces the session on the channel `worker:hook-started` and then
// never returns. Prints "ready" once listening.
import Foundation
import RedisClient
import SessionCache

let arguments = CommandLine.arguments
guard arguments.count == 5, arguments[1] == "expiry-hang", let port = Int(arguments[2]), let lease = Int(arguments[4]) else {
    FileHandle.standardError.write(Data("usage: session-test-worker expiry-hang PORT NAMESPACE LEASE_MS\n".utf8))
    exit(2)
}
let client = try RedisClient(configuration: RedisConfiguration(host: "127.0.0.1", port: port))
let store = SessionStore(client: client, configuration: SessionStoreConfiguration(namespace: arguments[3]))
var configuration = ExpiryListenerConfiguration()
configuration.claimLease = .milliseconds(lease)
let listener = ExpiryListener(store: store, configuration: configuration) { expired in
    _ = try await client.publish(.string(expired.session.id), to: "worker:hook-started")
    try await Task.sleep(for: .seconds(3600))
}
let run = Task { try await listener.run() }
FileHandle.standardOutput.write(Data("ready\n".utf8))
_ = try await run.value
