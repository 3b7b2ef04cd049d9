/// A Redis Functions library (Redis 7.0 or later): Lua code that registers named functions,
/// loaded with `FUNCTION LOAD` and called with `FCALL` / `FCALL_RO`.
///
/// Unlike `EVAL` scripts, functions are part of the data set: Redis keeps them in its append-only
/// file and replicates them, so a restart or a failover does not need a reload, and operators see
/// them in `FUNCTION LIST`.
///
/// ``HiredisClient/preload(_:)`` loads a library on every new connection; ``HiredisClientProtocol/call(_:in:keys:arguments:readOnly:)``
/// loads it again when the server answers that the function does not exist (after `FUNCTION
/// FLUSH`, or a server that was never given it) and retries once.
public struct LuaLibrary: Sendable, Hashable {
    /// The library's name, from the first line of its source (`#!lua name=<name>`).
    public let name: String
    /// The Lua source, shebang line included.
    public let source: String
    /// The library's revision, from a comment line `-- revision: N` among its first lines (0
    /// without one). A compatible change (same functions, arguments and replies) raises it, and
    /// ``HiredisClient/upgradeInPlace(_:)`` replaces an older revision on a running server;
    /// an incompatible one needs a new library name.
    public let revision: Int

    /// A library from its source, which must start with `#!lua name=<name>`.
    public init(source: String) throws(HiredisError) {
        let firstLine = source.prefix { $0 != "\n" }
        let words = firstLine.split(separator: " ")
        guard words.first == "#!lua", let option = words.first(where: { $0.hasPrefix("name=") }) else {
            throw .invalidConfiguration("a function library must start with '#!lua name=<name>'")
        }
        let name = option.dropFirst("name=".count)
        guard !name.isEmpty else { throw .invalidConfiguration("a function library must name itself") }
        self.name = String(name)
        self.source = source
        self.revision = Self.revision(of: source)
    }

    /// The revision a library's source declares (`-- revision: N` in its first 64 lines), 0
    /// without one.
    static func revision(of source: String) -> Int {
        for line in source.split(maxSplits: 64, omittingEmptySubsequences: false, whereSeparator: \.isNewline).prefix(64) {
            guard line.hasPrefix("-- revision:") else { continue }
            let digits = line.dropFirst("-- revision:".count).drop { $0 == " " }.prefix { $0.isASCII && $0.isNumber }
            return Int(digits.prefix(9)) ?? 0
        }
        return 0
    }

    /// `FUNCTION LOAD REPLACE <source>`.
    public var loadCommand: RESPCommand { RESPCommand("FUNCTION", "LOAD", "REPLACE", .string(source)) }
}

extension HiredisClient {
    /// Replaces `library` on every primary that holds an older revision of it
    /// (``LuaLibrary/revision``) with `FUNCTION LOAD REPLACE`, one primary at a time, and returns
    /// how many were replaced. A primary without the library is left to the connection handshake
    /// and to the reload of a function not found; one with the same or a newer revision is left
    /// alone, so app servers of two revisions side by side (a rolling deploy) never take a server
    /// back to the older one. ``preload(_:)`` runs it once in the background for a library with a
    /// revision.
    ///
    /// ```swift
    /// let library = try LuaLibrary(source: "#!lua name=greetings\n-- revision: 2\n...")
    /// let replaced = try await client.upgradeInPlace(library)
    /// ```
    @discardableResult
    public func upgradeInPlace(_ library: LuaLibrary) async throws -> Int {
        try await place(library, loadingWhereMissing: false)
    }

    /// On every primary: `library` loaded where missing (with `loadingWhereMissing`), replaced
    /// where older, and looked at again after a replacement, since an app server of an older
    /// revision may have replaced it in the same moment (at most three rounds; best effort: two
    /// app servers can still cross in the instant between a look and a replacement). Where
    /// `FUNCTION LIST` is refused (an ACL), a load without `REPLACE`, which never takes a server
    /// back. A primary that fails does not stop the others; the first failure is thrown at the
    /// end. Returns how many replacements were made.
    func place(_ library: LuaLibrary, loadingWhereMissing: Bool) async throws -> Int {
        let listing = RESPCommand("FUNCTION", "LIST", "LIBRARYNAME", .string(library.name), "WITHCODE")
        let plainLoad = RESPCommand("FUNCTION", "LOAD", .string(library.source))
        var replaced = 0
        var firstFailure: (any Error)?
        for primary in try await primaries() {
            do {
                var settled = false
                var lastRefusal: HiredisError?
                for _ in 0..<3 where !settled {
                    let listed: RESPReply
                    do {
                        listed = try await send(listing, toPrimary: primary)
                    } catch let error as HiredisError where error.serverError?.code == "NOPERM" {
                        if loadingWhereMissing { _ = try? await send(plainLoad, toPrimary: primary) }
                        settled = true
                        continue
                    }
                    guard let code = Self.code(of: library.name, in: listed) else {
                        guard loadingWhereMissing else {
                            settled = true
                            continue
                        }
                        do {
                            _ = try await send(plainLoad, toPrimary: primary)
                            settled = true
                        } catch let error as HiredisError where error.serverError?.message.contains("already exists") == true {
                            lastRefusal = error  // loaded by someone else meanwhile: look at its revision
                        }
                        continue
                    }
                    if LuaLibrary.revision(of: code) >= library.revision {
                        settled = true
                        continue
                    }
                    _ = try await send(library.loadCommand, toPrimary: primary)
                    replaced += 1
                }
                // Still missing after three tries: a function of another library has its name.
                if !settled, let lastRefusal { throw lastRefusal }
            } catch {
                if firstFailure == nil { firstFailure = error }
            }
        }
        if let firstFailure { throw firstFailure }
        return replaced
    }

    /// The code of the library `name` in a `FUNCTION LIST ... WITHCODE` reply (flat key-value
    /// arrays), nil when it is not there.
    static func code(of name: String, in reply: RESPReply) -> String? {
        let library = (reply.array ?? []).lazy.map(\.fieldMap).first { $0["library_name"]?.string == name }
        return library?["library_code"]?.string
    }
}

extension HiredisServerError {
    /// Whether this is Redis's reply to `FCALL` of a function it does not know.
    public var isFunctionNotFound: Bool { message.hasPrefix("ERR Function not found") }
}

extension HiredisClientProtocol {
    /// Calls a function of `library` (`FCALL`, or `FCALL_RO` when `readOnly`, which replicas accept
    /// too). When the server does not know the function, loads the library and calls once more.
    public func call(
        _ function: String, in library: LuaLibrary, keys: [RESPArgument], arguments: [RESPArgument], readOnly: Bool = false
    ) async throws -> RESPReply {
        let command = RESPCommand(readOnly ? "FCALL_RO" : "FCALL", capacity: 2 + keys.count + arguments.count) { all in
            all.append(.string(function))
            all.append(.integer(keys.count))
            all.append(contentsOf: keys)
            all.append(contentsOf: arguments)
        }
        return try await call(command, loading: library)
    }

    /// Sends `command`, an `FCALL` (or `FCALL_RO`) of a function of `library`. A server that does
    /// not know the function (a restart without persistence, a new primary) gets the library
    /// (on a cluster, every primary) and the call once more.
    @usableFromInline
    package func call(_ command: RESPCommand, loading library: LuaLibrary) async throws -> RESPReply {
        do {
            return try await send(command)
        } catch let error as HiredisError where error.serverError?.isFunctionNotFound == true {
            try await load(library)
            return try await send(command)
        }
    }

    /// Loads `library` where a function of it was not found: on a cluster the node that answered
    /// is one of several, so every primary gets it; callers that find it missing together share
    /// one load. The only place that reloads a library.
    package func load(_ library: LuaLibrary) async throws {
        if let client = self as? HiredisClient, library.revision > 0 {
            // Never back to an older revision: loaded where missing, replaced where older.
            try await client.libraryLoads.load(library) { _ = try await client.place(library, loadingWhereMissing: true) }
        } else if let client = self as? HiredisClient {
            try await client.libraryLoads.load(library) { _ = try await client.sendToEveryPrimary(library.loadCommand) }
        } else {
            _ = try await send(library.loadCommand)
        }
    }
}

extension HiredisClient {
    /// Sends `commands` in one pipeline; when a reply says a function is not found and `library`
    /// is set, loads it (``load(_:)``) and sends again, once, the calls that were not found (they
    /// ran nowhere) with the pipeline's other commands that are not function calls (`WAIT`,
    /// `TIME`: they describe the calls), never a call that ran.
    @usableFromInline
    package func pipeline(_ commands: [RESPCommand], loading library: LuaLibrary?, timeout: Duration) async throws -> [RESPReply] {
        var replies = try await pipeline(commands, timeout: timeout)
        guard let library, replies.contains(where: \.isFunctionNotFound) else { return replies }
        try await load(library)
        let again = commands.indices.filter { replies[$0].isFunctionNotFound || !commands[$0].isFunctionCall }
        let retried = try await pipeline(again.map { commands[$0] }, timeout: timeout)
        for (index, reply) in zip(again, retried) { replies[index] = reply }
        return replies
    }
}

extension RESPCommand {
    /// `FCALL` or `FCALL_RO`.
    var isFunctionCall: Bool { name == "FCALL" || name == "FCALL_RO" }
}

extension RESPReply {
    /// Whether this is the reply to a function the server does not know (its library is gone).
    var isFunctionNotFound: Bool {
        if case .error(let text) = self { return HiredisServerError(reply: text).isFunctionNotFound }
        return false
    }
}
