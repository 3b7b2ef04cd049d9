import ArgumentParser
import Foundation
import HiredisNIO
import Logging
import SessionCache

/// `session-cache`: inspect and manage live sessions.
@main
struct SessionCacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session-cache",
        abstract: "Inspect and manage the sessions of a swift-session-cache namespace.",
        discussion: """
            Connects to --redis URL (or REDIS_URL; default redis://127.0.0.1:6379). Human output by default, \
            --json for scripts. Each command's --help shows the equivalent redis-cli commands.
            """,
        version: "\(SessionCacheVersion.release) (Redis layout \(SessionCacheVersion.redisLayout))",
        subcommands: [ListSessions.self, Show.self, Stats.self, Watch.self, Kill.self, TTL.self, Import.self])
}

/// Where to connect, shared by every command.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Redis URL, redis://[user:password@]host:port/db (default: REDIS_URL, or redis://127.0.0.1:6379).")
    var redis: String?

    @Option(help: "The store's namespace (key prefix).")
    var namespace = "session"

    @Option(help: "The store's bucket count (its configuration's bucketCount).")
    var buckets = SessionStoreConfiguration().bucketCount

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func connect() throws -> (HiredisClient, SessionStore) {
        _ = standardErrorLogging
        let url = redis ?? ProcessInfo.processInfo.environment["REDIS_URL"] ?? "redis://127.0.0.1:6379"
        var configuration = try HiredisConfiguration(url: url)
        configuration.clientName = "session-cache-cli"
        configuration.poolSize = 1
        let client = try HiredisClient(configuration: configuration)
        // A one-shot tool: the client runs until the command closes it.
        Task { try? await client.run() }
        var storeConfiguration = SessionStoreConfiguration(namespace: namespace)
        storeConfiguration.bucketCount = buckets
        return (client, try SessionStore(client: client, configuration: storeConfiguration))
    }

    /// Redis's clock (Unix ms): the only clock sessions are timed by.
    func redisNow(_ client: HiredisClient) async throws -> Int {
        try await client.execute(TIME()).milliseconds
    }
}

/// Every line this tool prints goes through here: user names, previews, metadata and messages are
/// whoever's input, and a terminal obeys control sequences in them (ESC [ … to rewrite the screen,
/// OSC 52 to fill the clipboard). Control characters (C0 but tab and line feed, DEL, C1) and bidirectional
/// overrides are printed escaped as `\u00XX` (which is also valid inside JSON strings).
func print(_ text: String) {
    Swift.print(terminalSafe(text))
}

/// `text` with control characters and bidirectional overrides escaped as `\uXXXX`.
func terminalSafe(_ text: String) -> String {
    func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A: return false
        case 0x00...0x1F, 0x7F...0x9F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
    guard text.unicodeScalars.contains(where: isUnsafe) else { return text }
    var escaped = ""
    for scalar in text.unicodeScalars {
        if isUnsafe(scalar) {
            let hex = String(scalar.value, radix: 16)
            escaped += "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
        } else {
            escaped.unicodeScalars.append(scalar)
        }
    }
    return escaped
}

/// Prints a value as JSON (sorted keys, ISO dates).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// A duration in milliseconds, for people: "12.3 s", "4 min 3 s", "(none)".
func human(milliseconds: Int) -> String {
    switch milliseconds {
    case -2: return "(gone)"
    case -1: return "(no TTL!)"
    case ..<1000: return "\(milliseconds) ms"
    case ..<60_000: return String(format: "%.1f s", Double(milliseconds) / 1000)
    case ..<3_600_000: return "\(milliseconds / 60_000) min \(milliseconds % 60_000 / 1000) s"
    default: return String(format: "%.1f h", Double(milliseconds) / 3_600_000)
    }
}

let timeFormatter: DateFormatter = {
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter
}()

/// The libraries' warnings go to standard error: standard output is the command's result.
private let standardErrorLogging: Void = LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}
