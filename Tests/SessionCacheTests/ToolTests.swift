import EmbeddedRedis
import Foundation
import HiredisNIO
import NIOConcurrencyHelpers
import SessionCache
import Testing

/// Runs one of the package's executables to the end and returns its exit code and output.
func runTool(_ name: String, _ arguments: [String], timeout: Duration = .seconds(120)) async throws -> (status: Int32?, output: String) {
    let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path
    let lines = NIOLockedValueBox<[String]>([])
    let process = try ChildProcess(executable: path, arguments: arguments) { line in lines.withLockedValue { $0.append(line) } }
    let finished = await process.waitForExit(timeout: timeout)
    if !finished { process.send(SIGKILL) }
    return (process.exitCode, lines.withLockedValue { $0.joined(separator: "\n") })
}

@Suite("The command-line tools")
struct ToolTests {
    @Test func theOperatorCLIShowsAndManagesSessions() async throws {
        try await withStore { fixture in
            let url = fixture.server.url
            let common = ["--redis", url, "--namespace", "test", "--buckets", "\(fixture.keyspace.bucketCount)"]
            let session = try await fixture.store.create(user: "alice", metadata: ["plan": "pro"], agentType: "support")
            try await fixture.store.appendTurn(session.id, user: "Where is my order?", assistant: "It ships tomorrow.")
            let other = try await fixture.store.create(user: "bob")

            let list = try await runTool("session-cache", ["ls", "--user", "alice"] + common)
            #expect(list.status == 0)
            #expect(list.output.contains(session.id) && list.output.contains("support") && list.output.contains("It ships tomorrow."))

            let show = try await runTool("session-cache", ["show", session.id] + common)
            #expect(show.status == 0)
            #expect(show.output.contains("user              alice"))
            #expect(show.output.contains("meta:plan"))
            #expect(show.output.contains("assistant: It ships tomorrow."))
            #expect(show.output.contains(":timer:") && show.output.contains("lock: free"))

            let json = try await runTool("session-cache", ["show", session.id, "--json"] + common)
            let decoded = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
            #expect((decoded?["fields"] as? [String: String])?["user"] == "alice")
            let timer = try await fixture.timer(session.id) ?? ""
            #expect(((decoded?["ttlMilliseconds"] as? [String: Int])?[timer] ?? 0) > 0)

            let stats = try await runTool("session-cache", ["stats", "--json"] + common)
            let figures = try JSONDecoder().decode(SessionStats.self, from: Data(stats.output.utf8))
            #expect(figures.activeSessions == 2 && figures.users == 2)

            let ttl = try await runTool("session-cache", ["ttl", session.id] + common)
            #expect(ttl.status == 0 && ttl.output.contains("expires in"))

            // watch sees lifecycle events as they happen (it says "watching" once subscribed).
            let cli = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("session-cache")
                .path
            let (lines, feed) = AsyncStream.makeStream(of: String.self)
            let watcher = try ChildProcess(executable: cli, arguments: ["watch", "--count", "3"] + common) { feed.yield($0) }
            var printed = lines.makeAsyncIterator()
            while let line = await printed.next(), !line.hasPrefix("watching") {}
            let third = try await fixture.store.create(user: "carol")
            #expect(try await fixture.store.resume(third.id, user: "mallory") == .notFound)  // publishes nothing
            _ = try await fixture.store.resume(third.id, user: "carol")
            _ = try await fixture.store.rotate(third.id)
            var events: [String] = []
            while events.count < 3, let line = await printed.next() { events.append(line) }
            #expect(await watcher.waitForExit(timeout: .seconds(10)))
            #expect(events.count == 3 && events[0].contains("created") && events[0].contains("carol") && events[2].contains("rotated"))
            // Events name a session by a short prefix, never the whole id.
            #expect(events.count == 3 && events[1].contains("resumed") && events[1].contains(String(third.id.prefix(9))))
            #expect(!events.joined().contains(third.id))

            let kill = try await runTool("session-cache", ["kill", session.id] + common)
            #expect(kill.status == 0)
            #expect(try await fixture.store.get(session.id) == nil)
            let killUser = try await runTool("session-cache", ["kill", "--user", "bob"] + common)
            #expect(killUser.output.contains("deleted 1"))
            #expect(try await fixture.store.get(other.id) == nil)

            let help = try await runTool("session-cache", ["show", "--help"])
            #expect(help.output.contains("redis-cli HGETALL"))
            // Whoever's input (a user name, a message) must not drive the operator's terminal:
            // ESC sequences and OSC 52 (clipboard) come out escaped.
            let hostile = "mallory\u{1B}[2J\u{1B}]52;c;ZXZpbA==\u{07}\u{9B}31m\u{202E}"
            let trap = try await fixture.store.create(user: hostile, agentType: "agent")
            try await fixture.store.appendMessage(trap.id, SessionMessage(role: "user", content: "hi\u{1B}[31m red"))
            for arguments in [["ls", "--user", hostile], ["show", trap.id], ["show", trap.id, "--json"]] {
                let output = try await runTool("session-cache", arguments + common)
                #expect(output.status == 0)
                let controls = output.output.unicodeScalars.filter {
                    $0.value < 0x20 && $0 != "\n" || (0x7F...0x9F).contains($0.value) || $0.value == 0x202E
                }
                #expect(controls.isEmpty, "\(arguments[0]): \(controls.map(\.value))")
                #expect(output.output.contains("\\u001b"), "\(arguments[0]) shows the escape, escaped")
            }
            let json2 = try await runTool("session-cache", ["ttl", "not-an-id"] + common)
            #expect(json2.status != 0)
            let missing = try await runTool("session-cache", ["ttl", session.id] + common)
            #expect(missing.status != 0)
        }
    }

    @Test func aShortLoadRunWithThreeInstancesPassesItsChecks() async throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("session-load-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: report) }
        let run = try await runTool(
            "session-load", ["--duration", "4", "--users", "20", "--tabs", "2", "--instances", "3", "--ttl", "1", "--report", report.path],
            timeout: .seconds(120))
        #expect(run.status == 0, "\(run.output)")
        let summary = run.output.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.hasPrefix("{\"bench\":\"load\",\"instances\":3"))
        #expect(summary.contains("\"passed\":true,\"lost_updates\":0,\"unexplained_phantoms\":0,\"hooks_missed\":0"))
        let html = try String(contentsOf: report.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.contains("<svg") && html.contains("Throughput over time"))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: report.appendingPathComponent("report.json"))) as? [String: Any]
        #expect(json?["passed"] as? Bool == true)
    }

    /// The issue's short fault run: a pause longer than the idle timeout, a kill and restart with
    /// appendfsync always, a worker killed, a blackhole; every check must pass.
    @Test func aShortFaultRunPassesEveryCheck() async throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("session-load-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: report) }
        let run = try await runTool(
            "session-load",
            [
                "--duration", "14", "--users", "30", "--tabs", "2", "--instances", "3", "--ttl", "2", "--claim-lease", "3",
                "--appendfsync", "always", "--faults", "pause:3s@2s,kill@6s,worker-kill@8s,blackhole:2s@10s", "--report", report.path,
            ],
            timeout: .seconds(240))
        #expect(run.status == 0, "\(run.output)")
        for event in [
            "Redis paused (SIGSTOP)", "Redis restarted from its append-only file", "worker 2 killed", "network to Redis restored",
        ] {
            #expect(run.output.contains(event), "missing fault mark: \(event)")
        }
        #expect(run.output.contains("drained: every session finalized"))
        let summary = run.output.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.contains("\"passed\":true"), "\(summary)")
        let html = try String(contentsOf: report.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.contains("Errors over time") && html.contains("Redis killed (SIGKILL)"))

        // The report in a real browser: headless Chromium driven by Selenium.
        let checker = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Browser/check_report.py").path
        let lines = NIOLockedValueBox<[String]>([])
        let browser = try ChildProcess(
            executable: RedisServer.findExecutable("python3"), arguments: [checker, report.appendingPathComponent("report.html").path]
        ) { line in lines.withLockedValue { $0.append(line) } }
        let finished = await browser.waitForExit(timeout: .seconds(120))
        #expect(finished && browser.exitCode == 0, "\(lines.withLockedValue { $0 }.joined(separator: "\n"))")
    }

    @Test func badFaultPlansAreRefusedBeforeAnythingStarts() async throws {
        for faults in ["freeze@1s", "pause:3s@9s"] {
            let run = try await runTool("session-load", ["--duration", "10", "--faults", faults], timeout: .seconds(30))
            #expect(run.status != 0)
            #expect(run.output.contains("--faults"), "\(run.output)")
        }
    }

    @Test func aRunThatWritesWithoutTheLockIsCaught() async throws {
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("session-load-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: report) }
        let run = try await runTool(
            "session-load",
            [
                "--duration", "4", "--users", "6", "--tabs", "3", "--instances", "3", "--ttl", "1", "--report", report.path,
                "--unsafe-no-lock",
            ],
            timeout: .seconds(120))
        #expect(run.status != 0)
        #expect(run.output.contains("CHECKS FAILED"))
        #expect(run.output.contains("(lost update)"))
    }
}
