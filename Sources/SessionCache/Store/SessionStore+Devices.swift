import Foundation
import HiredisNIO

extension SessionStore {
    /// The user's sessions as the user may see them, to show "where you are signed in": newest
    /// activity first, each with its device label, creation, last activity, whether it is
    /// `current` (the id of the request's session), and a ``DeviceSession/handle`` that ends it with
    /// ``endSession(handle:user:)``. No id is in it: it can go to the page as it is. Bounded as
    /// ``list(user:limit:)``.
    ///
    /// ```swift
    /// try await store.setDevice(session.id, label: "Firefox on Linux")
    /// let devices = try await store.devices(user: "alice", current: session.id)
    /// if let other = devices.first(where: { !$0.isCurrent }) {
    ///     try await store.endSession(handle: other.handle, user: "alice")
    /// }
    /// ```
    public func devices(user: String, current: String? = nil, limit: Int = 50) async throws(SessionError) -> [DeviceSession] {
        try Self.validate(user: user)
        guard limit > 0 else { return [] }
        let scan = configuration.limits.maxListScan
        return try await instrumentation.run("devices") {
            try await redis.call(
                DevicesFunction(userIndexKey: keyspace.userSessions(user), limit: min(limit, scan), scan: scan, current: current))
        }
    }

    /// Ends the user's session that `handle` names (as ``delete(_:)`` does), when it is one of the
    /// user's: a handle of another user's session ends nothing. Returns whether a live session
    /// ended. Looks at the user's newest ``SessionStoreConfiguration/Limits/maxListScan`` sessions,
    /// the ones ``devices(user:current:limit:)`` can show.
    ///
    /// - Throws: ``SessionError/invalidHandle`` for a handle the store never gives out,
    ///   ``SessionError/invalidUser``.
    @discardableResult
    public func endSession(handle: String, user: String) async throws(SessionError) -> Bool {
        try Self.validate(user: user)
        guard Self.isWellFormed(handle: handle) else { throw .invalidHandle }
        return try await instrumentation.run("end_session") {
            try await redis.call(
                EndDeviceFunction(
                    userIndexKey: keyspace.userSessions(user), handle: handle, eventsChannel: eventsChannel,
                    indexLifetimeMilliseconds: configuration.indexLifetime.wholeMilliseconds, scan: configuration.limits.maxListScan),
                replicatedTo: configuration.replicaAcknowledgement)
        }
    }

    /// Labels the session's device ("Firefox on Linux", "Alice's phone"): the application's choice,
    /// shown by ``devices(user:current:limit:)``. Nil removes it. It does not slide the session.
    ///
    /// - Throws: ``SessionError/invalidDeviceLabel`` (longer than
    ///   ``SessionStoreConfiguration/Limits/maxDeviceLabelBytes``, or a control character),
    ///   ``SessionError/notFound``, ``SessionError/bindingInProgress``.
    public func setDevice(_ id: String, label: String?) async throws(SessionError) {
        try validate(id: id)
        let label = label ?? ""
        if label.utf8.count > configuration.limits.maxDeviceLabelBytes
            || label.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        {
            throw .invalidDeviceLabel
        }
        try await instrumentation.run("set_device", session: id) {
            try await redis.call(
                SetDeviceFunction(sessionKey: keyspace.session(id), label: label), replicatedTo: configuration.replicaAcknowledgement)
        }
    }

    /// A handle as `end_device` makes them: 24 lowercase hexadecimal digits.
    static func isWellFormed(handle: String) -> Bool {
        handle.utf8.count == 24 && handle.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}
