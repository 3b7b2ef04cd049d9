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

    /// Kills the servers of earlier processes that are gone, and removes their directories. A
    /// `ssc-redis-*` directory holds its server's pid (`redis.pid`) and the pid of the process that
    /// started it (`owner.pid`, written by ``RedisServer``). Its server is killed only when that pid
    /// is a redis-server (or redis-sentinel) running in that directory whose owner is gone: the
    /// recorded owner is not alive or is no longer the server's parent (it died and its pid was
    /// reused), or, with no owner recorded, the server's parent is init. A directory is removed
    /// when its server was killed, or when no server runs there and its recorded owner is gone
    /// (with no owner recorded: when it is more than a minute old). The servers and files of
    /// processes still running (other tests, `scripts/demo`, `session-load`) are left alone, and
    /// so is a process that a pid file names but that is not such a server.
    private static func reapOrphans() {
        let temporary = FileManager.default.temporaryDirectory
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: temporary.path) else { return }
        for entry in entries where entry.hasPrefix("ssc-redis-") {
            let directory = temporary.appendingPathComponent(entry)
            let owner = readPid(directory.appendingPathComponent("owner.pid"))
            if let pid = readPid(directory.appendingPathComponent("redis.pid")), let server = process(pid),
                server.command == "redis-server" || server.command == "redis-sentinel",
                isSameFile("/proc/\(pid)/cwd", directory.path)
            {
                let abandoned = owner.map { !isAlive($0) || server.parent != $0 } ?? (server.parent == 1)
                guard abandoned else { continue }
                kill(pid, SIGKILL)
            } else if let owner {
                guard !isAlive(owner) else { continue }
            } else {
                // No owner recorded: a directory of an earlier version, unless it was made a moment
                // ago (its owner writes the file right after making it).
                guard let attributes = try? FileManager.default.attributesOfItem(atPath: directory.path),
                    let modified = attributes[.modificationDate] as? Date, modified.timeIntervalSinceNow < -60
                else { continue }
            }
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// The pid in a pid file; nil unless it names a single process other than init.
    private static func readPid(_ file: URL) -> Int32? {
        guard let text = try? String(contentsOf: file, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1
        else { return nil }
        return pid
    }

    /// Whether a process `pid` exists (a zombie counts: it is gone once its children are reparented).
    private static func isAlive(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// A process's command name and parent (`/proc/<pid>/stat`: "pid (comm) state ppid ...").
    private static func process(_ pid: Int32) -> (command: String, parent: Int32)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { return nil }
        let command = String(stat[stat.index(after: open)..<close])
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, let parent = Int32(fields[1]) else { return nil }
        return (command, parent)
    }

    /// Whether two paths name the same file (device and inode, after following links): a server's
    /// `/proc/<pid>/cwd` is the directory it was started in (`--dir`).
    private static func isSameFile(_ first: String, _ second: String) -> Bool {
        var a = stat()
        var b = stat()
        guard stat(first, &a) == 0, stat(second, &b) == 0 else { return false }
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }
}
