import HiredisNIO
import NIOCore

@_spi(Fuzzing)
extension SessionFuzzEntryPoints {
    /// Plays `bytes` as a sequence of store operations with fuzzed arguments against a real Redis
    /// (`client`, the store's own), then empties the store's keys. Properties (a violation traps):
    /// - every failure is a typed ``SessionError`` other than `redis` or `corrupted` (bad input
    ///   never reaches Redis as a raw error, and nothing the store wrote reads back as corrupt);
    /// - an operation refused for its input, or for a session that is not alive, writes, changes
    ///   or removes no key (but for keys that were about to expire);
    /// - after the sequence, every key the store made has a TTL.
    public static func runStoreOperations(_ bytes: [UInt8], store: SessionStore, client: HiredisClient) async {
        var input = FuzzInput(bytes)
        var ids: [String] = []
        while let operation = input.byte() {
            let before = await snapshot(client)
            do throws(SessionError) {
                switch operation % 12 {
                case 0: ids.append(try await store.create(user: input.string(), metadata: [input.string(): input.json()]).id)
                case 1: ids.append(try await store.createAnonymous(mode: input.mode()).id)
                case 2: try await store.touch(input.id(from: ids), activity: input.bool() ? .meaningful : .heartbeat)
                case 3: try await store.setMetadata(input.id(from: ids), key: input.string(), value: input.json())
                case 4: try await store.appendMessage(input.id(from: ids), SessionMessage(role: input.string(), content: input.string()))
                case 5: ids.append(try await store.rotate(input.id(from: ids)).id)
                case 6: try await store.delete(input.id(from: ids))
                case 7: ids.append(try await store.bind(input.id(from: ids), to: input.string()).id)
                case 8: try await store.setTimeoutMode(input.id(from: ids), input.mode() ?? .lenient)
                case 9: _ = try await store.list(user: input.string(), limit: input.int())
                case 10: _ = try await store.recentMessages(input.id(from: ids), limit: input.int())
                default: _ = try await store.get(input.id(from: ids))
                }
            } catch {
                switch error {
                case .redis, .corrupted: preconditionFailure("operation \(operation % 12) failed with \(error)")
                case .bindingInProgress, .notReplicated, .invalidConfiguration, .unsupportedServer, .staleLease:
                    break
                default:
                    // Refused for its input, or the session is not alive: no key appeared, changed or
                    // went, but for keys about to expire (Redis expires them on its own meanwhile).
                    let after = await snapshot(client)
                    let changed = after.contains { key, value in before[key]?.value != value.value }
                    let removed = before.contains { key, value in after[key] == nil && !(0..<2000).contains(value.ttl) }
                    precondition(!changed && !removed, "operation \(operation % 12) was refused (\(error)) but wrote")
                }
            }
        }
        for key in await keys(client) {
            let ttl = (try? await client.send(RESPCommand("PTTL", .string(key))).int) ?? -2
            precondition(ttl != -1, "a key without a TTL after operations")
        }
        _ = try? await client.send(RESPCommand("FLUSHDB"))
    }

    /// Every key, its serialized value (`DUMP`, which leaves TTLs out: they count down) and its
    /// TTL in milliseconds.
    private static func snapshot(_ client: HiredisClient) async -> [String: (value: ByteBuffer, ttl: Int)] {
        var values: [String: (value: ByteBuffer, ttl: Int)] = [:]
        for key in await keys(client) {
            guard case .bulkString(let bytes) = try? await client.send(RESPCommand("DUMP", .string(key))) else { continue }
            values[key] = (bytes, (try? await client.send(RESPCommand("PTTL", .string(key))).int) ?? -2)
        }
        return values
    }

    private static func keys(_ client: HiredisClient) async -> [String] {
        ((try? await client.send(RESPCommand("KEYS", "*")))?.array ?? []).compactMap(\.string)
    }
}

/// Fuzzed arguments drawn from the input bytes, in turn.
struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func byte() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func bool() -> Bool { (byte() ?? 0) & 1 == 1 }

    /// A string of up to 63 bytes; lengths past 48 give a long run of one character (limits).
    mutating func string() -> String {
        let length = Int(byte() ?? 0) % 64
        if length > 48 { return String(repeating: "u", count: (length - 48) * 1000) }
        var text: [UInt8] = []
        for _ in 0..<length { text.append(byte() ?? 0) }
        return String(decoding: text, as: UTF8.self)
    }

    /// Small, negative, zero or huge.
    mutating func int() -> Int {
        switch (byte() ?? 0) % 5 {
        case 0: return Int(byte() ?? 0)
        case 1: return -Int(byte() ?? 0)
        case 2: return 0
        case 3: return .max
        default: return Int(byte() ?? 0) << 40
        }
    }

    mutating func json() -> JSONValue {
        switch (byte() ?? 0) % 5 {
        case 0: return .string(string())
        case 1: return .number(Double(int()))
        case 2: return .bool(bool())
        case 3: return .array([.string(string()), .null])
        default: return ["k": .string(string())]
        }
    }

    mutating func mode() -> TimeoutMode? {
        switch (byte() ?? 0) % 4 {
        case 0: return nil
        case 1: return .lenient
        case 2: return .custom(.milliseconds(int()))
        default: return .custom(.seconds(Int64.max))
        }
    }

    /// Mostly an id the store issued, sometimes a fuzzed string.
    mutating func id(from ids: [String]) -> String {
        let choice = Int(byte() ?? 0)
        if choice < 200, !ids.isEmpty { return ids[choice % ids.count] }
        return string()
    }
}
