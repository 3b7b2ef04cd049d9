import HiredisNIO
import NIOCore

/// The session store's server-side functions (`sessions.lua`, a Redis Functions library), and the
/// protocol their typed wrappers follow.
///
/// Each function is called through a wrapper type (``SessionFunction``) that builds its keys and
/// arguments and decodes its reply into a Swift value in one place; nothing else in the package
/// reads a function's reply by position.
enum SessionFunctions {
    /// The library, loaded on every connection of a store's client and again when a server lost it.
    static let library: LuaLibrary = {
        do {
            return try LuaLibrary(source: source)
        } catch {
            fatalError("sessions.lua does not start with its library name: \(error)")
        }
    }()

    /// Every function of the library is registered under this prefix (names are global in Redis:
    /// a new, incompatible version of the library gets a new prefix and name, so that old and new
    /// app servers can share a Redis during a rolling deploy).
    static let prefix = "session_\(SessionCacheVersion.redisLayout)_"

    /// Every function's registered name (``prefix`` + its name), by name, read once from the
    /// library's `register(...)` lines: a call does not build it (an allocation per call).
    private static let registeredNames: [String: String] = {
        var names: [String: String] = [:]
        let marker = "register('"
        for line in source.split(separator: "\n") where line.hasPrefix(marker) {
            let name = String(line.dropFirst(marker.count).prefix { $0 != "'" })
            names[name] = prefix + name
        }
        return names
    }()

    /// The name Redis knows a function by.
    static func registeredName(_ name: String) -> String { registeredNames[name] ?? prefix + name }
}

/// A typed wrapper of one function of `sessions.lua`: a ``HiredisCommand`` whose command is the
/// function's `FCALL` and whose library is ``SessionFunctions/library`` (loaded again where a
/// server lost it).
protocol SessionFunction: HiredisCommand {
    /// The function's name without the library prefix.
    static var name: String { get }
    /// Whether the function is registered `no-writes` (called with `FCALL_RO`; replicas serve it).
    static var isReadOnly: Bool { get }
    /// `KEYS`: the first one decides the slot.
    var keys: [RESPArgument] { get }
    /// `ARGV`.
    var arguments: [RESPArgument] { get }
}

extension SessionFunction {
    static var isReadOnly: Bool { false }

    var library: LuaLibrary? { SessionFunctions.library }

    /// The `FCALL` (`FCALL_RO`) of this call.
    var command: RESPCommand {
        let keys = self.keys
        let arguments = self.arguments
        return RESPCommand(Self.isReadOnly ? "FCALL_RO" : "FCALL", capacity: 2 + keys.count + arguments.count) { all in
            all.append(.string(SessionFunctions.registeredName(Self.name)))
            all.append(.integer(keys.count))
            all.append(contentsOf: keys)
            all.append(contentsOf: arguments)
        }
    }
}

extension HiredisClientProtocol {
    /// Calls a session function and decodes its reply: what ``HiredisClientProtocol/execute(_:)``
    /// does, written out here so that the compiler specializes it for each function (a generic
    /// call into the client's module costs every touch ~10% more client CPU).
    func call<Function: SessionFunction>(_ function: Function) async throws -> Function.Response {
        try function.decode(try await call(function.command, loading: SessionFunctions.library))
    }
}

extension HiredisClient {
    /// Calls a session function and, when `acknowledgement` is set, waits on the same connection
    /// (`WAIT` goes with the call in one pipeline, to the same node) until that many replicas
    /// have the write.
    ///
    /// - Throws: ``SessionError/notReplicated(acknowledged:required:)`` when fewer confirm in time.
    func call<Function: SessionFunction>(
        _ function: Function, replicatedTo acknowledgement: SessionStoreConfiguration.ReplicaAcknowledgement?
    ) async throws -> Function.Response {
        guard let acknowledgement else { return try await call(function) }
        let (result, acknowledged) = try await execute(
            function, acknowledgement.wait, timeout: configuration.commandTimeout + acknowledgement.timeout)
        let response = try result.get()
        try acknowledgement.check((try? acknowledged.get()) ?? 0)
        return response
    }

    /// Calls several session functions in one pipeline (split by node on a cluster) and decodes
    /// their replies in order; the first error reply is thrown. A server that lost the library
    /// gets it again and the calls it did not know are repeated once (they ran nowhere).
    func callEach<Function: SessionFunction>(_ functions: [Function]) async throws -> [Function.Response] {
        let replies = try await pipeline(functions.map(\.command), loading: SessionFunctions.library, timeout: configuration.commandTimeout)
        return try zip(functions, replies).map { function, reply in
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
            return try function.decode(reply)
        }
    }
}

extension SessionStoreConfiguration.ReplicaAcknowledgement {
    /// The `WAIT` that goes with a write in its pipeline.
    var wait: WAIT { WAIT(replicas: replicas, timeout: timeout) }

    /// Throws ``SessionError/notReplicated(acknowledged:required:)`` when fewer replicas than
    /// asked confirmed the write.
    func check(_ acknowledged: Int) throws(SessionError) {
        if acknowledged < replicas { throw .notReplicated(acknowledged: acknowledged, required: replicas) }
    }
}

/// The status word that starts every function's reply (see the header of `sessions.lua`), decoded
/// here once; each function's wrapper says which it answers.
enum FunctionStatus: String, Sendable {
    case ok
    /// The session ended, or was deleted or rotated (its key may still exist, dead).
    case notAlive = "not_alive"
    /// The key does not exist at all.
    case notFound = "not_found"
    case exists
    case binding
    case bound
    case tooLarge = "too_large"
    case tooManyKeys = "too_many_keys"
    case staleLease = "stale_lease"
    case notAnonymous = "not_anonymous"
    case granted
    case held
    /// The caller does not hold the lock.
    case notHeld = "not_held"
    case lapsed
    case other
}

/// A function's reply: a status word, alone or followed by values (see the header of
/// `sessions.lua`).
struct FunctionReply {
    let status: FunctionStatus
    private let values: [RESPReply]
    private let function: String

    init(_ reply: RESPReply, of function: String) throws(SessionError) {
        let parts: [RESPReply]
        switch reply {
        case .array(let array): parts = array
        case .bulkString, .simpleString: parts = [reply]  // the word alone
        default: throw .corrupted("\(function): unexpected reply (\(reply.shape))")
        }
        guard let word = parts.first?.string else { throw .corrupted("\(function): unexpected reply (\(reply.shape))") }
        guard let status = FunctionStatus(rawValue: word) else { throw .corrupted("\(function): unknown status word") }
        self.status = status
        self.values = Array(parts.dropFirst())
        self.function = function
    }

    /// The value at `index` (0 is the first after the status).
    func value(_ index: Int) throws(SessionError) -> RESPReply {
        guard index < values.count else { throw .corrupted("\(function): reply too short") }
        return values[index]
    }

    func int(_ index: Int) throws(SessionError) -> Int {
        guard let value = try value(index).int else { throw .corrupted("\(function): value \(index) is not an integer") }
        return value
    }

    func string(_ index: Int) throws(SessionError) -> String {
        guard let value = try value(index).string else { throw .corrupted("\(function): value \(index) is not a string") }
        return value
    }

    func array(_ index: Int) throws(SessionError) -> [RESPReply] {
        guard let value = try value(index).array else { throw .corrupted("\(function): value \(index) is not an array") }
        return value
    }

    /// A status the caller does not know: the library and the code disagree.
    func unexpected() -> SessionError { .corrupted("\(function): unexpected status '\(status.rawValue)'") }
}
