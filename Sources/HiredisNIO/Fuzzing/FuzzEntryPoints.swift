import NIOCore

/// Entry points for the fuzz targets (`Fuzz/`, `scripts/fuzz`) and their corpus replay in the
/// unit tests: the parsers that take bytes or strings from outside, driven as the client drives
/// them. Not API: `@_spi(Fuzzing)`.
@_spi(Fuzzing)
public enum FuzzEntryPoints {
    /// Feeds `bytes` to a reply reader with small limits (so the limits are reached), in pieces
    /// whose sizes the first byte chooses, and reads every reply. Properties: no crash, no trap,
    /// no allocation past the limits; a failure is a typed ``HiredisError``.
    public static func readReplies(_ bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first else { return }
        let limits = ReplyLimits(maxBulkBytes: 4096, maxReplyBytes: 16_384, maxElements: 1024, maxNesting: 6)
        let reader = ReplyReader(limits: limits)
        let piece = Int(first % 64) + 1
        var offset = 1
        do {
            while offset < bytes.count {
                let count = min(piece, bytes.count - offset)
                try reader.feed(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])))
                offset += count
                while let reply = try reader.next() { _ = reply.shape }
            }
        } catch {
            precondition(
                error.code == .protocolError || error.code == .replyTooLarge, "unexpected error code \(error.code)")
        }
    }

    /// Reads `bytes` as replies (as ``readReplies(_:)``) and gives each to what reads the
    /// topology from servers: `CLUSTER SHARDS` and `CLUSTER SLOTS` into a slot map, `MOVED` and
    /// `ASK` error replies into redirections applied to it, Sentinel subscription confirmations,
    /// and `SENTINEL SENTINELS`/`REPLICAS` listings. Properties: no crash; topology errors are typed ``HiredisError``s; after
    /// every change, each slot's node is one of the map's primaries and each primary serves a slot.
    public static func parseTopologyReplies(_ bytes: UnsafeRawBufferPointer) {
        let limits = ReplyLimits(maxBulkBytes: 4096, maxReplyBytes: 65_536, maxElements: 4096, maxNesting: 6)
        let reader = ReplyReader(limits: limits)
        var replies: [RESPReply] = []
        do {
            try reader.feed(ByteBuffer(bytes: bytes))
            while let reply = try reader.next(), replies.count < 64 { replies.append(reply) }
        } catch {
            precondition(error.code == .protocolError || error.code == .replyTooLarge, "unexpected error code \(error.code)")
        }
        var map = ClusterSlotMap()
        for reply in replies {
            for usesTLS in [false, true] {
                if let topology = try? ClusterTopology(shardsReply: reply, fallbackHost: "10.0.0.1", usesTLS: usesTLS) {
                    _ = map.apply(topology)
                    checkSlots(of: map)
                }
            }
            if let topology = try? ClusterTopology(slotsReply: reply, fallbackHost: "10.0.0.1") {
                _ = map.apply(topology)
                checkSlots(of: map)
            }
            if case .error(let text) = reply, let redirection = Redirection(HiredisServerError(reply: text), fallbackHost: "10.0.0.1") {
                // As the router follows one: the slot's node, then the move.
                _ = map.primary(forSlot: redirection.slot)
                _ = map.moved(slot: redirection.slot, to: redirection.address ?? "10.0.0.9:6379")
                checkSlots(of: map)
            }
            _ = SentinelDiscovery.isConfirmation(reply)
            for address in SentinelDiscovery.addresses(in: reply) {
                precondition(!address.host.isEmpty && (1...65535).contains(address.port), "a listed address out of range")
            }
        }
    }

    private static func checkSlots(of map: ClusterSlotMap) {
        let primaries = Set(map.primaries)
        var served: Set<String> = []
        for slot in 0..<HashSlot.count {
            guard let node = map.primary(forSlot: slot) else { continue }
            precondition(primaries.contains(node), "slot \(slot) is served by a node that is no primary")
            served.insert(node)
        }
        precondition(served == primaries, "a primary serves no slot")
    }

    /// Parses `bytes` as a Redis URL, and as one with a password: `redis://app:<P>@<R>` where
    /// the bytes are `P`, a NUL, then `R`. Properties: no crash; errors are
    /// ``HiredisError/Code/invalidConfiguration``; neither the redacted URL nor an
    /// error shows `P` (when `P` has 4 characters or more, one of them non-ASCII or one of
    /// `!$~^|<>\` (not `*`: the redaction writes `***`), and appears nowhere else in the URL,
    /// the `@` after it included). The same for `P` as a Sentinel URL's `sentinel_password`,
    /// followed by `&` and `R`, when `P` has no `&`.
    public static func parseURL(_ bytes: UnsafeRawBufferPointer) {
        let text = String(decoding: bytes, as: UTF8.self)
        check(text, secret: nil)
        guard let separator = bytes.firstIndex(of: 0) else { return }
        let password = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<separator]), as: UTF8.self)
        let rest = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(separator + 1)...]), as: UTF8.self)
        let prefix = "redis://app:"
        let url = prefix + password + "@" + rest
        // The password must be told apart from the messages' own words ("redis+sentinel" is one):
        // a character no message has makes it so.
        let marked = password.unicodeScalars.contains { !$0.isASCII || "!$~^|<>\\".unicodeScalars.contains($0) }
        // (Nowhere else: in the URL without it either, the separating `@` included.)
        let distinct = password.count >= 4 && marked && !(prefix + "@" + rest).contains(password)
        check(url, secret: distinct ? password : nil)
        // The Sentinels' password in the query: hidden up to the next `&` or `#`.
        let query = "redis+sentinel://s1:26379/primary?sentinel_password="
        let inQuery = query + password + "&" + rest
        let hidden = distinct && !password.contains("&") && !(query + "&" + rest).contains(password)
        check(inQuery, secret: hidden ? password : nil)
    }

    private static func check(_ url: String, secret: String?) {
        let redacted = HiredisConfiguration.redacted(url)
        if let secret { precondition(!redacted.contains(secret), "the redacted URL shows the password") }
        do {
            _ = try HiredisConfiguration(url: url)
        } catch {
            precondition(error.code == .invalidConfiguration, "unexpected error code \(error.code)")
            if let secret { precondition(!error.message.contains(secret), "an error shows the password") }
        }
    }
}
