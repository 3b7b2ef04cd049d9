import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Makes sure no test server outlives its test process: the servers still running when the
/// process exits are killed (`atexit`), and servers that an earlier process left behind (it
/// crashed, or was killed, so its exit handler never ran) are killed when the next one starts
/// its first server. Left running, a few hundred idle cluster nodes of old runs took most of a
/// 2-core machine and made every benchmark on it noisy.
enum ServerReaper {
    private static let live = NIOLockedValueBox<Set<Int32>>([])
    private static let installed: Bool = {
        reapOrphans()
        atexit { ServerReaper.killLive() }
        return true
    }()

    /// Records a started server's process.
    static func started(_ pid: Int32) {
        _ = installed
        live.withLockedValue { _ = $0.insert(pid) }
    }

    /// Forgets a server's process once it has exited.
    static func exited(_ pid: Int32) {
        live.withLockedValue { _ = $0.remove(pid) }
    }

    private static func killLive() {
        for pid in live.withLockedValue({ $0 }) { kill(pid, SIGKILL) }
    }

    /// Kills the servers of earlier processes that are gone: a pid file in a `ssc-redis-*`
    /// directory whose redis-server's parent is init (an orphan; a server of a test process that
    /// is still running has that process as its parent).
    private static func reapOrphans() {
        let temporary = FileManager.default.temporaryDirectory
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: temporary.path) else { return }
        for entry in entries where entry.hasPrefix("ssc-redis-") {
            let directory = temporary.appendingPathComponent(entry)
            guard let text = try? String(contentsOf: directory.appendingPathComponent("redis.pid"), encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), isOrphanedRedis(pid)
            else { continue }
            kill(pid, SIGKILL)
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Whether `pid` is a redis-server whose parent is init (`/proc/<pid>/stat`: "pid (comm) state ppid ...").
    private static func isOrphanedRedis(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { return false }
        let command = stat[stat.index(after: open)..<close]
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard command.hasPrefix("redis-"), fields.count > 1, let parent = Int32(fields[1]) else { return false }
        return parent == 1
    }
}
