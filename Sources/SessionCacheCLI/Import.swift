import ArgumentParser
import Foundation
import HiredisNIO
import SessionCache

/// `session-cache import`: switching from vapor/redis or hummingbird-auth without logging anyone out.
struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import the sessions of vapor/redis or hummingbird-auth, each honoured once under its old cookie.",
        discussion: """
            Scans the source Redis (--source, default the store's) for the other system's keys: vapor/redis's \
            `vrs-<id>` (Vapor's SessionData as JSON) or hummingbird-auth's `hbs.<id>` (the app's session as JSON, \
            through a Redis or Valkey persist driver). Each becomes a session of this store with the time it had \
            left (vapor/redis sets no TTL: the mode's absolute lifetime applies), under a new id. The old id is \
            kept for one use: with `redeemsImported` the Vapor driver or the Hummingbird middleware hands the \
            session to the first request that presents it and replaces the cookie. Re-running imports nothing twice. \
            The source keys are left as they are. Prints counts only: never an id or a value.
            redis-cli equivalent of what one import writes:
              redis-cli FCALL session_v3_create 1 '<ns>:{b}:session:<new id>' ...   (the session)
            (c is crc16(old id) mod the bucket count.)
              redis-cli SET '<ns>:{c}:imported:<old id>' '<new id>' NX PX <idle ms>
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case vaporRedis = "vapor-redis"
        case hummingbirdAuth = "hummingbird-auth"

        var pattern: String { self == .vaporRedis ? "vrs-*" : "hbs.*" }
    }

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The other system's format: \(Format.allCases.map(\.rawValue).joined(separator: ", ")).") var from: Format
    @Option(help: "Where its sessions are (a standalone Redis URL; default: --redis).") var source: String?
    @Option(help: "vapor-redis: the data key naming the user (Vapor's SessionAuthenticator writes _<User>Session).")
    var userKey: String?
    @Option(help: "hummingbird-auth: the session's member naming the user (a string or an integer).") var userField: String?
    @Option(help: "The imported sessions' timeout mode (default: the store's).") var mode: String?
    @Flag(help: "Read and check everything, write nothing.") var dryRun = false

    struct Counts: Encodable {
        var scanned = 0
        var imported = 0
        var alreadyImported = 0
        var expired = 0
        /// Not in the format (not JSON, not the expected shape, an id that cannot be a cookie).
        var unreadable = 0
        /// Refused by the store (a limit, an invalid user or metadata key): left in the source.
        var refused = 0
        /// vapor-redis sessions holding a `_<User>Session` key, imported without a user because
        /// no --user-key was given: their user's list and log-out everywhere do not see them.
        var withoutUser = 0
    }

    func run() async throws {
        let (client, store) = try connection.connect()
        defer { Task { await client.close() } }
        var timeoutMode: TimeoutMode?
        if let mode {
            guard let parsed = TimeoutMode(storedName: mode) else { throw ValidationError("unknown timeout mode '\(mode)'") }
            timeoutMode = parsed
        }
        var sourceClient = client
        if let source {
            var configuration = try HiredisConfiguration(url: source)
            configuration.clientName = "session-cache-import"
            configuration.poolSize = 1
            sourceClient = try HiredisClient(configuration: configuration)
            let started = sourceClient
            Task { try? await started.run() }
        }
        defer { if source != nil { let started = sourceClient; Task { await started.close() } } }
        // SCAN walks one server: on a cluster each call would land on another node, with another
        // node's cursor.
        if case .cluster = sourceClient.configuration.topology {
            throw ValidationError("the source is a cluster: run the import once per primary, with --source redis://<node>")
        }

        var counts = Counts()
        var cursor = "0"
        repeat {
            let page = try await sourceClient.send(
                RESPCommand("SCAN", .string(cursor), "MATCH", .string(from.pattern), "COUNT", 500, "TYPE", "string"))
            guard let parts = page.array, parts.count == 2, let next = parts[0].string, let keys = parts[1].array?.compactMap(\.string)
            else { throw ValidationError("the source answered SCAN with something else than a cursor and keys") }
            cursor = next
            guard !keys.isEmpty else { continue }
            let replies = try await sourceClient.pipeline(
                keys.flatMap { [RESPCommand("GET", .string($0)), RESPCommand("PTTL", .string($0))] })
            for (index, key) in keys.enumerated() {
                counts.scanned += 1
                // Gone since the scan (expired, logged out): nothing to carry over.
                guard let value = replies[2 * index].string, let ttl = replies[2 * index + 1].int, ttl != -2 else {
                    counts.expired += 1
                    continue
                }
                let remaining: Duration? = ttl >= 0 ? .milliseconds(ttl) : nil  // -1: no TTL
                let decoded =
                    switch from {
                    case .vaporRedis: ImportedSession(vaporRedisKey: key, value: value, remaining: remaining, userKey: userKey)
                    case .hummingbirdAuth:
                        ImportedSession(hummingbirdAuthKey: key, value: value, remaining: remaining, userField: userField)
                    }
                guard var former = decoded, ImportedSession.isValidFormerID(former.formerID) else {
                    counts.unreadable += 1
                    continue
                }
                former.mode = timeoutMode
                // Vapor's SessionAuthenticator key without --user-key: logged in, but not the user's.
                if from == .vaporRedis, userKey == nil,
                    former.metadata.keys.contains(where: { $0.hasPrefix("_") && $0.hasSuffix("Session") })
                {
                    counts.withoutUser += 1
                }
                if dryRun {
                    counts.imported += 1
                    continue
                }
                switch await attempt(store, former) {
                case .success(.imported): counts.imported += 1
                case .success(.alreadyImported): counts.alreadyImported += 1
                case .success(.expired): counts.expired += 1
                // The store unreachable: stop (re-running imports nothing twice).
                case .failure(.redis(let error)): throw error
                // Anything else is this session's: a limit, an invalid user or metadata key.
                case .failure: counts.refused += 1
                }
            }
        } while cursor != "0"

        if counts.withoutUser > 0 {
            FileHandle.standardError.write(
                Data(
                    ("warning: \(counts.withoutUser) session(s) hold a _<User>Session key but were imported without a user: "
                        + "give --user-key (run again after removing their imported: keys, or they stay anonymous)\n").utf8))
        }
        if connection.json { return try printJSON(counts) }
        print(
            "\(dryRun ? "would import" : "imported") \(counts.imported) of \(counts.scanned) \(from.rawValue) session(s): "
                + "\(counts.alreadyImported) imported before, \(counts.expired) expired, \(counts.unreadable) unreadable, "
                + "\(counts.refused) refused by the store")
    }
}

/// One session's import with its typed error (a `catch` clause matching a SessionError case
/// crashes the Swift 6.3 compiler here).
private func attempt(_ store: SessionStore, _ former: ImportedSession) async -> Result<ImportResult, SessionError> {
    do throws(SessionError) {
        return .success(try await store.importSession(former))
    } catch {
        return .failure(error)
    }
}
