import CFuzzer
import Dispatch
@_spi(Testing) import EmbeddedRedis
import HiredisNIO
@_spi(Fuzzing) import SessionCache

#if canImport(Glibc)
    import Glibc
#endif

// The store's API against a real redis-server (started once, on loopback): each input is a
// sequence of operations with fuzzed arguments (see `SessionFuzzEntryPoints.runStoreOperations`).
final class Harness: Sendable {
    let server: RedisServer
    let client: HiredisClient
    let store: SessionStore

    init() {
        // Filled by the task before it signals: the semaphore orders the write before the read.
        final class Slot: @unchecked Sendable { var value: (RedisServer, HiredisClient, SessionStore)? }
        let ready = DispatchSemaphore(value: 0)
        let slot = Slot()
        Task {
            do {
                let server = try await RedisServer.start()
                let client = try HiredisClient.started(configuration: server.configuration)
                var configuration = SessionStoreConfiguration(namespace: "fuzz")
                configuration.limits.maxSessionsPerUser = 3
                slot.value = (server, client, try SessionStore(client: client, configuration: configuration))
            } catch {
                fatalError("cannot start the fuzz target's redis-server: \(error)")
            }
            ready.signal()
        }
        ready.wait()
        (server, client, store) = slot.value!
    }

    func run(_ bytes: [UInt8]) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await SessionFuzzEntryPoints.runStoreOperations(bytes, store: store, client: client)
            done.signal()
        }
        done.wait()
    }
}

nonisolated(unsafe) var harness: Harness?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    if harness == nil { harness = Harness() }
    harness?.run(Array(UnsafeRawBufferPointer(start: data, count: size)))
    return 0
}

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
