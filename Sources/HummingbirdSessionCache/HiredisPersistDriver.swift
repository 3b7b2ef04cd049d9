#if Hummingbird
    import Foundation
    import HiredisNIO
    import Hummingbird
    import NIOCore
    import ServiceLifecycle

    /// Hummingbird's key-value persistence (`PersistDriver`) on Redis through `HiredisClient`.
    ///
    /// Values are stored as JSON under `keyPrefix + key` (no prefix by default, as the framework's
    /// own drivers: an app switching drivers finds its keys), with millisecond expiries:
    /// - `create` is one `SET NX [PX]`: an existing key throws `PersistError.duplicate`.
    /// - `set` with an expiry is `SET PX`; without one it keeps the key's current expiry (`KEEPTTL`),
    ///   as the protocol asks.
    /// - `getWithTTL` is `GET` and `PTTL` in one round trip.
    /// - Redis errors are thrown, never turned into "not found" or "no expiry" (an outage must not
    ///   log everyone out); a stored value that does not decode as the asked type throws
    ///   `PersistError.invalidConversion`.
    ///
    /// ```swift
    /// let persist = HiredisPersistDriver(client: redis)
    /// try await persist.set(key: "greeting", value: "hello", expires: .seconds(60))
    /// ```
    ///
    /// Its `run()` is the protocol's (it waits for graceful shutdown): the client it uses is a
    /// service of its own, to run in the same `ServiceGroup` (before it).
    public struct HiredisPersistDriver: PersistDriver {
        let client: HiredisClient
        let keyPrefix: String

        /// A driver on `client`, its keys starting with `keyPrefix`.
        public init(client: HiredisClient, keyPrefix: String = "") {
            self.client = client
            self.keyPrefix = keyPrefix
        }

        public func create<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
            var command = RESPCommand("SET", .string(keyPrefix + key), .bytes(try Self.encode(value)), "NX")
            if let expires { command.arguments += ["PX", .integer(Self.milliseconds(expires))] }
            if try await client.send(command).isNull { throw PersistError.duplicate }
        }

        public func set<Object: Codable & Sendable>(key: String, value: Object, expires: Duration?) async throws {
            var command = RESPCommand("SET", .string(keyPrefix + key), .bytes(try Self.encode(value)))
            if let expires {
                command.arguments += ["PX", .integer(Self.milliseconds(expires))]
            } else {
                command.arguments.append("KEEPTTL")
            }
            _ = try await client.send(command)
        }

        public func get<Object: Codable & Sendable>(key: String, as type: Object.Type) async throws -> Object? {
            guard let buffer = try await client.get(keyPrefix + key) else { return nil }
            return try Self.decode(buffer, as: type)
        }

        public func getWithTTL<Object: Codable & Sendable>(
            key: String, as type: Object.Type
        ) async throws -> (object: Object, ttl: Duration?)? {
            let replies = try await client.pipeline([
                RESPCommand("GET", .string(keyPrefix + key)), RESPCommand("PTTL", .string(keyPrefix + key)),
            ])
            for reply in replies {
                if case .error(let text) = reply { throw HiredisError.server(HiredisServerError(reply: text)) }
            }
            guard case .bulkString(let buffer) = replies[0] else { return nil }
            // -1: no expiry; -2: gone since the GET (then it expires as it is read).
            guard let milliseconds = replies[1].int else { throw HiredisError.unexpectedReply(expected: "an integer", got: replies[1]) }
            let ttl = milliseconds >= 0 ? Duration.milliseconds(milliseconds) : nil
            return (try Self.decode(buffer, as: type), ttl)
        }

        public func remove(key: String) async throws {
            _ = try await client.delete([keyPrefix + key])
        }

        private static func encode<Object: Encodable>(_ value: Object) throws -> [UInt8] {
            Array(try JSONEncoder().encode(value))
        }

        private static func decode<Object: Decodable>(_ buffer: ByteBuffer, as type: Object.Type) throws -> Object {
            do {
                return try JSONDecoder().decode(type, from: Data(buffer.readableBytesView))
            } catch {
                throw PersistError.invalidConversion
            }
        }

        /// At least 1 ms: `PX 0` is refused by Redis, and an expiry of zero means "already gone".
        private static func milliseconds(_ duration: Duration) -> Int {
            max(1, duration.wholeMillisecondsRoundedUp)
        }
    }

    extension Duration {
        fileprivate var wholeMillisecondsRoundedUp: Int {
            let (seconds, attoseconds) = components
            return Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        }
    }
#endif  // Hummingbird
