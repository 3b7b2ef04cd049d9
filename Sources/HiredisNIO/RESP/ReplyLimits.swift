/// How large a reply the client accepts, enforced while the reply is parsed.
///
/// Whoever can answer as Redis (a broken proxy, a man in the middle on a plaintext connection,
/// a host named by a `MOVED` redirect, `CLUSTER SHARDS` or a Sentinel) could otherwise make the
/// client allocate without bound: `*2147483647\r\n`, thirteen bytes, announces two billion
/// elements, and `$<huge>` followed by a stream of bytes grows a buffer forever. Past any limit
/// the connection is closed and the commands waiting on it fail with
/// ``HiredisError/Code/replyTooLarge``; the limit is checked when a header
/// announces a size, before the bytes arrive.
///
/// The defaults are far above what a session store reads (its largest reply is one session's
/// data and recent messages, bounded by the store's own size limits) and what Redis itself
/// sends by default (`proto-max-bulk-len` is 512 MB, but a value that large is not a session):
///
/// ```swift
/// var configuration = HiredisConfiguration(host: "127.0.0.1", port: 6379)
/// configuration.replyLimits.maxBulkBytes = 1 << 20  // nothing this app reads is above 1 MiB
/// ```
public struct ReplyLimits: Sendable, Hashable {
    /// Bytes of one bulk string. Default 64 MiB.
    public var maxBulkBytes: Int
    /// Bytes of one reply: its strings and what is buffered for it. Default 256 MiB.
    public var maxReplyBytes: Int
    /// Elements of the aggregates (arrays) of one reply, all levels counted together, so a nested
    /// reply cannot multiply the limit. Default 1,048,576 (about 32 MiB of parsed elements).
    public var maxElements: Int
    /// How deeply aggregates nest. Default 16 (Redis's own replies nest at most 4 deep; hiredis
    /// 0.14 refuses more than 7 by itself).
    public var maxNesting: Int

    /// Limits with the defaults above.
    public init(
        maxBulkBytes: Int = 64 << 20, maxReplyBytes: Int = 256 << 20, maxElements: Int = 1 << 20, maxNesting: Int = 16
    ) {
        self.maxBulkBytes = maxBulkBytes
        self.maxReplyBytes = maxReplyBytes
        self.maxElements = maxElements
        self.maxNesting = maxNesting
    }

    func validate() throws(HiredisError) {
        if maxBulkBytes < 1 || maxReplyBytes < 1 || maxElements < 1 || maxNesting < 1 {
            throw .invalidConfiguration("reply limits must be at least 1")
        }
    }
}
