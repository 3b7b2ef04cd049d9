import NIOConcurrencyHelpers

/// Loads of function libraries in flight, one per library: callers that find a function missing
/// at the same time (every caller, after a server lost its libraries) share one load instead of
/// each sending the whole library to every primary.
final class LibraryLoads: Sendable {
    private let inFlight = NIOLockedValueBox<[String: Task<Void, any Error>]>([:])

    /// Runs `load` for `library`, or waits for the load of it already under way.
    func load(_ library: LuaLibrary, _ load: @escaping @Sendable () async throws -> Void) async throws {
        let task = inFlight.withLockedValue { loads in
            if let running = loads[library.name] { return running }
            let task = Task {
                defer { _ = self.inFlight.withLockedValue { $0.removeValue(forKey: library.name) } }
                try await load()
            }
            loads[library.name] = task
            return task
        }
        try await task.value
    }
}
