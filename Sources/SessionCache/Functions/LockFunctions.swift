import HiredisNIO
import NIOCore

// Typed wrappers of the lock functions of `sessions.lua`. The uncontended acquire is no function:
// `SET <lock> <token> NX PX <lease>` and `TIME` in one round trip (see ``SessionLock``).

/// A fencing token from Redis's `TIME` reply: microseconds since the epoch.
enum FencingToken {
    static func from(seconds: RESPReply, microseconds: RESPReply) -> Int? {
        guard let seconds = seconds.int, let micros = microseconds.int else { return nil }
        return seconds * 1_000_000 + micros
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
        case .granted:
            guard let fence = FencingToken.from(seconds: try reply.value(0), microseconds: try reply.value(1)) else {
                throw .corrupted("\(Self.name): bad fencing token")
            }
            return .granted(fence: fence)
        case .held: return .held(millisecondsLeft: try reply.int(0))
        default: throw reply.unexpected()
        }
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
