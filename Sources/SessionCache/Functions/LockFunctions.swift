import HiredisNIO
import NIOCore

// Typed wrappers of the lock functions of `sessions.lua`.

/// `lock_take`: the uncontended acquire (takes the lock if nobody holds it and nobody waits).
struct LockTakeFunction: SessionFunction {
    static let name = "lock_take"
    let lockKey: String
    let token: String
    let lease: Duration

    var keys: [RESPArgument] { [.string(lockKey)] }
    var arguments: [RESPArgument] { [.string(token), .integer(lease.wholeMilliseconds)] }

    /// The fencing token when granted; nil when the lock is held.
    func decode(_ reply: RESPReply) throws(SessionError) -> Int? {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .granted: return try LockAcquireFunction.fence(reply)
        case .held: return nil
        default: throw reply.unexpected()
        }
    }
}

/// `lock_acquire`: the contended path and takeovers.
struct LockAcquireFunction: SessionFunction {
    enum Mode: String, Sendable {
        /// Queue up behind the holder.
        case wait
        /// Do not queue.
        case `try`
        /// Take the lock over at once (``SessionLockConfiguration/Policy/activeTabWins``).
        case takeover
    }

    enum Result: Sendable, Equatable {
        case granted(fence: Int)
        case held(millisecondsLeft: Int)
    }

    static let name = "lock_acquire"
    let lockKey: String
    let token: String
    let lease: Duration
    let mode: Mode
    let staleWaiter: Duration

    var keys: [RESPArgument] { [.string(lockKey)] }
    var arguments: [RESPArgument] {
        [.string(token), .integer(lease.wholeMilliseconds), .string(mode.rawValue), .integer(staleWaiter.wholeMilliseconds)]
    }

    func decode(_ reply: RESPReply) throws(SessionError) -> Result {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .granted: return .granted(fence: try Self.fence(reply))
        case .held: return .held(millisecondsLeft: try reply.int(0))
        default: throw reply.unexpected()
        }
    }

    /// A grant's fencing token: a positive integer.
    static func fence(_ reply: FunctionReply) throws(SessionError) -> Int {
        let fence = try reply.int(0)
        guard fence > 0 else { throw .corrupted("\(name): bad fencing token") }
        return fence
    }
}

/// `lock_release`: releases (and hands over to the next waiter) if the caller holds the lock.
struct LockReleaseFunction: SessionFunction {
    static let name = "lock_release"
    let lockKey: String
    let token: String
    let staleWaiter: Duration
    let handoverLease: Duration

    var keys: [RESPArgument] { [.string(lockKey)] }
    var arguments: [RESPArgument] { [.string(token), .integer(staleWaiter.wholeMilliseconds), .integer(handoverLease.wholeMilliseconds)] }

    /// Whether the caller held the lock.
    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return true
        case .notHeld: return false
        default: throw reply.unexpected()
        }
    }
}

/// `lock_extend`: renews the lease if the caller holds the lock.
struct LockExtendFunction: SessionFunction {
    static let name = "lock_extend"
    let lockKey: String
    let token: String
    let lease: Duration

    var keys: [RESPArgument] { [.string(lockKey)] }
    var arguments: [RESPArgument] { [.string(token), .integer(lease.wholeMilliseconds)] }

    /// Whether the caller still held the lock.
    func decode(_ reply: RESPReply) throws(SessionError) -> Bool {
        let reply = try FunctionReply(reply, of: Self.name)
        switch reply.status {
        case .ok: return true
        case .notHeld: return false
        default: throw reply.unexpected()
        }
    }
}

/// `lock_abandon`: a waiter leaves the queue (passing the lock on if it had been handed to it).
struct LockAbandonFunction: SessionFunction {
    static let name = "lock_abandon"
    let lockKey: String
    let token: String
    let staleWaiter: Duration
    let handoverLease: Duration

    var keys: [RESPArgument] { [.string(lockKey)] }
    var arguments: [RESPArgument] { [.string(token), .integer(staleWaiter.wholeMilliseconds), .integer(handoverLease.wholeMilliseconds)] }

    func decode(_ reply: RESPReply) throws(SessionError) {
        let reply = try FunctionReply(reply, of: Self.name)
        guard reply.status == .ok else { throw reply.unexpected() }
    }
}
