import Foundation
import HiredisNIO
import NIOCore

/// Entry points for the fuzz targets (`Fuzz/`, `scripts/fuzz`) and their corpus replay in the unit
/// tests: what the store parses from outside (cookies, user names, tab names) and from Redis
/// (metadata JSON, stored messages, session hashes). Not API: `@_spi(Fuzzing)`.
@_spi(Fuzzing)
public enum SessionFuzzEntryPoints {
    /// Splits `bytes` at NUL bytes into inputs and runs each through the store's own parsers and
    /// checks. Properties (a violation traps, which the fuzzer reports):
    /// - a session id is accepted only in the form the store issues (27 URL-safe characters, its
    ///   bucket in range), and its redacted form is a strict prefix of it;
    /// - user and tab names are accepted only within their documented rules;
    /// - the JSON parser agrees with Foundation's wherever both accept a text (but for a member
    ///   named twice: ours keeps the last value, Foundation's the first), and what it accepts
    ///   encodes and parses back to the same value;
    /// - a stored message line parses or is refused, never traps; a session hash made of the
    ///   inputs decodes or throws ``SessionError/corrupted(_:)``.
    public static func parseInputs(_ bytes: UnsafeRawBufferPointer) {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        let keyspace = try! SessionKeyspace(namespace: "fuzz", bucketCount: 64)
        for text in parts {
            checkID(text, keyspace: keyspace)
            checkTab(text)
            checkUser(text)
            checkJSON(text)
            _ = SessionMessage(storedLine: text)
        }
        checkRecord(parts)
    }

    private static func checkID(_ id: String, keyspace: SessionKeyspace) {
        guard let bucket = keyspace.bucket(ofSession: id) else { return }
        precondition((0..<64).contains(bucket), "bucket \(bucket) out of range")
        precondition(id.utf8.count == 27, "an accepted id of \(id.utf8.count) bytes")
        precondition(id.utf8.allSatisfy { SessionID.isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        let redacted = SessionID.redacted(id)
        precondition(redacted.count < id.count && id.hasPrefix(redacted), "the redacted id is not a strict prefix")
    }

    private static func checkTab(_ tab: String) {
        do {
            try SessionStore.validate(tab: tab)
            let bytes = tab.utf8
            precondition((1...64).contains(bytes.count) && tab != "queue" && tab != "seen", "a refused tab name was accepted")
            precondition(bytes.allSatisfy { SessionID.isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") })
        } catch {
            precondition(error == .invalidTab, "a tab name refused with \(error)")
        }
    }

    private static func checkUser(_ user: String) {
        do {
            try SessionStore.validate(user: user)
            precondition((1...200).contains(user.utf8.count) && !user.contains(where: \.isNewline), "a refused user name was accepted")
        } catch {
            precondition(error == .invalidUser, "a user name refused with \(error)")
        }
    }

    private static func checkJSON(_ text: String) {
        let (ours, duplicateNames) = JSONValue.parse(text)
        if let ours {
            // What we accept encodes and parses back to itself.
            let encoded = try! JSONEncoder().encode(ours)
            let again = JSONValue(parsing: String(decoding: encoded, as: UTF8.self))
            precondition(again == ours, "a parsed value does not survive encoding")
        }
        // A member named twice: ours keeps the last value (as JavaScript), Foundation's the first.
        guard !duplicateNames, let data = text.data(using: .utf8),
            let foundation = try? JSONDecoder().decode(JSONValue.self, from: data)
        else { return }
        if let ours { precondition(ours == foundation, "the parser disagrees with Foundation's") }
    }

    private static func checkRecord(_ parts: [String]) {
        let pairs = parts.map { RESPReply.bulkString(ByteBuffer(string: $0)) }
        do {
            _ = try SessionRecord(pairs).session(id: "fuzz")
        } catch {
            guard case .corrupted = error else { preconditionFailure("a session hash refused with \(error)") }
        }
    }
}
