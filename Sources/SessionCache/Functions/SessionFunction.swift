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
    static let prefix = "session_v2_"

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

/// A typed wrapper of one function of `sessions.lua`.
protocol SessionFunction: Sendable {
    /// What the reply decodes to.
    associatedtype Result: Sendable
    /// The function's name without the library prefix.
    static var name: String { get }
    /// Whether the function is registered `no-writes` (called with `FCALL_RO`; replicas serve it).
    static var isReadOnly: Bool { get }
    /// `KEYS`: the first one decides the slot.
    var keys: [RESPArgument] { get }
    /// `ARGV`.
    var arguments: [RESPArgument] { get }
    /// The reply as a Swift value (this call's: it may depend on what was sent).
    func decode(_ reply: RESPReply) throws(SessionError) -> Result
}

extension SessionFunction {
    static var isReadOnly: Bool { false }

    /// The `FCALL` (`FCALL_RO`) of this call, for pipelines.
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

extension RESPReply {
    /// Whether this is the reply to a function the server does not know (its library is gone).
    fileprivate var isFunctionNotFound: Bool {
        if case .error(let text) = self { return HiredisServerError(reply: text).isFunctionNotFound }
        return false
    }
}

extension HiredisClientProtocol {
    /// Calls a session function and decodes its reply.
    func call<Function: SessionFunction>(_ function: Function) async throws -> Function.Result {
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
    ) async throws -> Function.Result {
        guard let acknowledgement else { return try await call(function) }
        let wait = RESPCommand("WAIT", .integer(acknowledgement.replicas), .integer(acknowledgement.timeout.wholeMilliseconds))
        var replies = try await pipeline([function.command, wait], timeout: configuration.commandTimeout + acknowledgement.timeout)
        if replies[0].isFunctionNotFound {
            _ = try await sendToEveryPrimary(SessionFunctions.library.loadCommand)
            replies = try await pipeline([function.command, wait], timeout: configuration.commandTimeout + acknowledgement.timeout)
        }
        if case .error(let text) = replies[0] { throw HiredisError.server(HiredisServerError(reply: text)) }
        let result = try function.decode(replies[0])
        let acknowledged = replies[1].int ?? 0
        if acknowledged < acknowledgement.replicas {
            throw SessionError.notReplicated(acknowledged: acknowledged, required: acknowledgement.replicas)
        }
        return result
    }

    /// Calls several session functions in one pipeline (split by node on a cluster) and decodes
    /// their replies in order; the first error reply is thrown. A server that lost the library
    /// gets it again and the calls are repeated once (a function that is not found ran nowhere).
    func callEach<Function: SessionFunction>(_ functions: [Function]) async throws -> [Function.Result] {
        let commands = functions.map(\.command)
        var replies = try await pipeline(commands)
        if replies.contains(where: \.isFunctionNotFound) {
            _ = try await sendToEveryPrimary(SessionFunctions.library.loadCommand)
            replies = try await pipeline(commands)
        }
        return try zip(functions, replies).map { function, reply in
            if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
            return try function.decode(reply)
        }
    }
}

/// A function's reply: a status word followed by values (see the header of `sessions.lua`).
struct FunctionReply {
    let status: String
    private let values: [RESPReply]
    private let function: String

    init(_ reply: RESPReply, of function: String) throws(SessionError) {
        guard case .array(let parts) = reply, let status = parts.first?.string else {
            throw .corrupted("\(function): unexpected reply (\(reply.shape))")
        }
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
    func unexpected() -> SessionError { .corrupted("\(function): unexpected status '\(status)'") }
}
