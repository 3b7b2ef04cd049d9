/// The versions a deployment may need to know: this release, and the version of the data layout
/// in Redis it reads and writes.
///
/// ```swift
/// print("swift-session-cache \(SessionCacheVersion.release), Redis layout \(SessionCacheVersion.redisLayout)")
/// ```
///
/// The layout version names the server-side function library (`session_cache_v3`) and its
/// functions' prefix (`session_v3_`), so that app servers of two layouts can share a Redis during a
/// rolling deploy. A release that changes the layout gets a new layout version and ships with the
/// migration of data written by the one before (see the KeysInRedis article).
public enum SessionCacheVersion {
    /// This release of the package (semantic versioning; 0.x: the API may still change).
    public static let release = "0.1.0"
    /// The version of the data layout in Redis: `v` and a number.
    public static let redisLayout = "v3"
}
