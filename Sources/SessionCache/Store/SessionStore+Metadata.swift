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
    /// ``JSONValue/null`` removes the key. Metadata never changes the session's lifetime, whatever
    /// its keys are called: that is ``setTimeoutMode(_:_:lease:)``'s alone. Meaningful activity: slides the idle expiry. With a `lease`, the write happens only while
    /// the lease is held (``SessionError/staleLease`` otherwise).
    ///
    /// - Throws: a limit error, ``SessionError/notFound``, ``SessionError/staleLease``.
    public func setMetadata(_ id: String, _ values: [String: JSONValue], lease: LockLease? = nil) async throws(SessionError) {
        try await writeMetadata(id, values, mode: nil, lease: lease)
    }

    /// Changes the session's timeout mode: its idle timeout applies from now on, and its absolute
    /// deadline becomes its creation plus the mode's absolute lifetime (it ends at once if that has
    /// passed). The expiry hook and warning follow the new timing.
    public func setTimeoutMode(_ id: String, _ mode: TimeoutMode, lease: LockLease? = nil) async throws(SessionError) {
        try await writeMetadata(id, [:], mode: mode, lease: lease)
    }

    private func writeMetadata(
        _ id: String, _ values: [String: JSONValue], mode: TimeoutMode?, lease: LockLease?
    ) async throws(SessionError) {
        try validate(id: id)
        let leaseArguments = try self.leaseArguments(lease, for: id)
        let resolved = try mode.map { mode throws(SessionError) in try resolve(mode) }
        if values.count > configuration.limits.maxMetadataKeys {
            throw .tooManyMetadataKeys(count: values.count, limit: configuration.limits.maxMetadataKeys)
        }
        var fields = try encodeMetadata(values.filter { $0.value != .null })
        for key in values.keys.sorted() where values[key] == .null {
            try validate(metadataKey: key)
            fields.append((SessionKeyspace.Field.metadataPrefix + key, ""))
        }
        let retention = resolved.map(retention(for:)) ?? configuration.retention
        try await instrumentation.run("set_metadata", session: id) {
            let result = try await redis.call(
                SetMetadataFunction(
                    sessionKey: keyspace.session(id), lease: leaseArguments, limits: configuration.limits,
                    modeChange: resolved.map { .init(mode: $0.mode, absoluteLifetime: $0.absoluteLifetime) }, retention: retention,
                    fields: fields),
                replicatedTo: configuration.dataWriteAcknowledgement)
            try check(result.write)
            if resolved != nil {
                if let timer = result.timer, !timer.isEmpty {
                    timers.remember(timer, for: id, redisTime: result.now, keyspace: keyspace)
                } else {
                    timers.forget(id)
                }
            }
        }
    }

    /// The lease arguments of a write: the lease must be for this session.
    func leaseArguments(_ lease: LockLease?, for id: String) throws(SessionError) -> LeaseArguments {
        guard let lease else { return .none }
        guard lease.sessionID == id else { throw .staleLease }
        return LeaseArguments(token: lease.token, tab: lease.tab ?? "")
    }

    /// Turns a write function's result into the store's errors.
    func check(_ result: WriteResult) throws(SessionError) {
        switch result {
        case .written: return
        case .notAlive: throw .notFound
        case .tooLarge(let bytes): throw .sessionTooLarge(bytes: bytes, limit: configuration.limits.maxSessionBytes)
        case .tooManyKeys(let count): throw .tooManyMetadataKeys(count: count, limit: configuration.limits.maxMetadataKeys)
        case .staleLease:
            instrumentation.staleWrites.increment()
            throw .staleLease
        case .binding: throw .bindingInProgress
        }
    }

    func validate(metadataKey key: String) throws(SessionError) {
        if key.isEmpty || key.utf8.count > configuration.limits.maxMetadataKeyBytes
            || key.unicodeScalars.contains(where: { $0.value < 0x20 })
        {
            throw .invalidMetadataKey(key)
        }
    }

    /// Metadata as hash fields (`meta:<key>`) and JSON text, checked against the limits.
    func encodeMetadata(_ values: [String: JSONValue]) throws(SessionError) -> [(field: String, value: String)] {
        var encoded: [(field: String, value: String)] = []
        encoded.reserveCapacity(values.count)
        let limit = configuration.limits.maxMetadataValueBytes
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            try validate(metadataKey: key)
            let text = MetadataCoding.encode(value)
            if text.utf8.count > limit { throw .metadataValueTooLarge(key: key, bytes: text.utf8.count, limit: limit) }
            encoded.append((SessionKeyspace.Field.metadataPrefix + key, text))
        }
        return encoded
    }
}

enum MetadataCoding {
    static func encode(_ value: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    static func decode(_ text: String) -> JSONValue? {
        JSONValue(parsing: text)
    }
}
