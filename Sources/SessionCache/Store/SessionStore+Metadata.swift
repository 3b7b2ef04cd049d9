import Foundation
import HiredisNIO

extension SessionStore {
    /// The session's metadata (read-only: does not slide the expiry).
    ///
    /// - Throws: ``SessionError/notFound`` when the session is not alive.
    public func metadata(_ id: String) async throws(SessionError) -> [String: JSONValue] {
        guard let session = try await get(id) else { throw SessionError.notFound }
        return session.metadata
    }

    /// Sets one metadata value; only that field is written.
    public func setMetadata(_ id: String, key: String, value: JSONValue, lease: LockLease? = nil) async throws(SessionError) {
        try await setMetadata(id, [key: value], lease: lease)
    }

    /// Sets several metadata values in one atomic write; only those fields are written, so
    /// concurrent requests changing other keys do not overwrite each other. A value of
    /// ``JSONValue/null`` removes the key. Setting `timeout_mode` to a mode's name (`aggressive`,
    /// `standard`, `lenient`, `persistent`, `custom:<ms>`) changes the session's timeout mode too.
    /// Meaningful activity: slides the idle expiry. With a `lease`, the write is fenced: refused
    /// with ``SessionError/staleLease`` when a newer lease was issued for the session since.
    ///
    /// - Throws: a limit error, ``SessionError/notFound``, ``SessionError/staleLease``.
    public func setMetadata(_ id: String, _ values: [String: JSONValue], lease: LockLease? = nil) async throws(SessionError) {
        let mode = values["timeout_mode"]?.stringValue.flatMap(TimeoutMode.init(storedName:))
        try await writeMetadata(id, values, mode: mode, lease: lease)
    }

    /// Changes the session's timeout mode (its idle timeout applies from now on).
    public func setTimeoutMode(_ id: String, _ mode: TimeoutMode, lease: LockLease? = nil) async throws(SessionError) {
        try await writeMetadata(id, [:], mode: mode, lease: lease)
    }

    private func writeMetadata(
        _ id: String, _ values: [String: JSONValue], mode: TimeoutMode?, lease: LockLease?
    ) async throws(SessionError) {
        try validate(id: id)
        let fenceArgument = try self.fence(of: lease, for: id)
        if mode != nil { touchCache.forget(id) }
        let removals = values.filter { $0.value == .null }.map(\.key)
        let encoded = try encodeMetadata(values.filter { $0.value != .null })
        try await instrumentation.run("set_metadata", session: id) {
            var arguments: [RESPArgument] = [
                .integer(Self.nowMilliseconds()), .integer(grace), fenceArgument, .integer(configuration.limits.maxSessionBytes),
                .string(mode.map { String($0.idleTimeout.wholeMilliseconds) } ?? ""), .string(mode?.storedName ?? ""),
            ]
            for (field, value) in encoded { arguments += [.string(field), .string(value)] }
            for key in removals { arguments += [.string(MetadataCoding.prefix + key), ""] }
            let reply = try await runScript(SessionScripts.setMetadata, id: id, arguments: arguments)
            guard case .array(let parts) = reply, let status = parts.first?.int else {
                throw SessionError.corrupted("unexpected reply \(reply)")
            }
            try checkWriteStatus(status, detail: parts.count > 1 ? parts[1].int : nil)
        }
    }

    /// The fencing token argument of a write: '' without a lease.
    func fence(of lease: LockLease?, for id: String) throws(SessionError) -> RESPArgument {
        guard let lease else { return "" }
        guard lease.sessionID == id else { throw .staleLease }
        return .integer(lease.fence)
    }

    /// Turns a write script's status into the store's errors: 1 ok, 0 not alive, -1 too large,
    /// -2 stale fencing token.
    func checkWriteStatus(_ status: Int, detail: Int?) throws {
        switch status {
        case 1: return
        case -1: throw SessionError.sessionTooLarge(bytes: detail ?? 0, limit: configuration.limits.maxSessionBytes)
        case -2:
            instrumentation.staleWrites.increment()
            throw SessionError.staleLease
        default: throw SessionError.notFound
        }
    }

    /// Metadata as hash fields (`meta:<key>`) and JSON text, checked against the limits.
    func encodeMetadata(_ values: [String: JSONValue]) throws(SessionError) -> [(field: String, value: String)] {
        var encoded: [(field: String, value: String)] = []
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            if key.isEmpty || key.utf8.count > 200 { throw .invalidMetadataKey(key) }
            let text = MetadataCoding.encode(value)
            let limit = configuration.limits.maxMetadataValueBytes
            if text.utf8.count > limit { throw .metadataValueTooLarge(key: key, bytes: text.utf8.count, limit: limit) }
            encoded.append((MetadataCoding.prefix + key, text))
        }
        return encoded
    }
}

enum MetadataCoding {
    /// Hash fields of application metadata start with this.
    static let prefix = "meta:"

    static func encode(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    static func decode(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }
}
