import EmbeddedRedis
import Foundation
import HiredisNIO
import Histogram
import NIOConcurrencyHelpers
import SessionCache

/// Starts Redis (unless given one), the worker processes, shows progress, then checks and reports.
struct Coordinator {
    var parameters: LoadParameters
    var reportDirectory: URL
    var embedded: RedisServer?

    /// Runs the load; returns the process exit code (non-zero when a check failed).
    func run() async throws -> Int32 {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let encoded = try JSONEncoder().encode(parameters).base64EncodedString()
        try FileManager.default.createDirectory(at: reportDirectory, withIntermediateDirectories: true)
        var workers: [(ChildProcess, URL)] = []
        let output = NIOLockedValueBox<[String]>([])
        for index in 0..<parameters.instances {
            let resultFile = reportDirectory.appendingPathComponent("worker-\(index).json")
            let process = try ChildProcess(
                executable: executable,
                arguments: ["--worker-index", "\(index)", "--worker-parameters", encoded, "--worker-result", resultFile.path]
            ) { line in output.withLockedValue { $0.append("worker \(index): \(line)") } }
            workers.append((process, resultFile))
        }

        let client = try HiredisClient.started(configuration: try HiredisConfiguration(url: parameters.redisURL))
        defer { Task { await client.close() } }
        await showProgress(client: client, workers: workers.map(\.0))

        var results: [WorkerResult] = []
        var failures: [String] = []
        for (index, (process, file)) in workers.enumerated() {
            if process.exitCode != 0 { failures.append("worker \(index) exited with status \(process.waitStatus ?? -1)") }
            if let data = try? Data(contentsOf: file), let result = try? JSONDecoder().decode(WorkerResult.self, from: data) {
                results.append(result)
            } else {
                failures.append("worker \(index) left no result")
            }
        }
        for line in output.withLockedValue({ $0 }) where line.contains("error") || line.contains("Fatal") { print(line) }

        var storeConfiguration = SessionStoreConfiguration(namespace: parameters.namespace)
        storeConfiguration.expiryListener = true
        let store = try SessionStore(client: client, configuration: storeConfiguration)
        let checks = try await Checks.run(client: client, store: store, parameters: parameters)
        let report = Report(parameters: parameters, results: results, checks: checks, workerFailures: failures)
        report.printTable()
        try report.write(to: reportDirectory)
        print("report: \(reportDirectory.appendingPathComponent("report.html").path) (and report.json)")
        report.printSummaryLine()
        return report.passed ? 0 : 1
    }

    /// A live progress bar on a terminal; a plain line every five seconds otherwise (CI logs).
    private func showProgress(client: HiredisClient, workers: [ChildProcess]) async {
        let interactive = isatty(STDOUT_FILENO) == 1
        let start = ContinuousClock.now
        let total = parameters.duration + parameters.drain
        var lastLine = ContinuousClock.now - .seconds(10)
        var lastOps = 0
        var lastTime = start
        while workers.contains(where: \.isRunning) {
            try? await Task.sleep(for: .seconds(1))
            if ContinuousClock.now - start > .seconds(Int64(total + 120)) {
                print("\nworkers did not finish in time: stopping them")
                for worker in workers { worker.send(SIGKILL) }
                break
            }
            let replies = try? await client.pipeline([
                RESPCommand("HGETALL", .string("\(parameters.bookkeeping):progress")),
                RESPCommand("HGET", .string("\(parameters.bookkeeping):progress"), "active"),
            ])
            var operations = 0
            var errors = 0
            let fields = replies?.first?.array ?? []
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                let name = fields[index].string ?? ""
                if name.hasPrefix("ops-") { operations += fields[index + 1].int ?? 0 }
                if name.hasPrefix("errors-") { errors += fields[index + 1].int ?? 0 }
            }
            let active = replies?.last?.int ?? 0
            let now = ContinuousClock.now
            let elapsed = (now - start).components.seconds
            let rate =
                Double(operations - lastOps)
                / max(0.001, Double((now - lastTime).components.seconds) + Double((now - lastTime).components.attoseconds) / 1e18)
            lastOps = operations
            lastTime = now
            let phase = Double(elapsed) <= parameters.duration ? "load" : "drain"
            if interactive {
                let width = 30
                let filled = min(width, Int(Double(width) * Double(elapsed) / total))
                let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
                print(
                    "\r\(bar) \(elapsed)s/\(Int(total))s \(phase)  \(Int(rate)) ops/s  errors \(errors)  active sessions \(active)   ",
                    terminator: "")
                fflush(nil)
            } else if now - lastLine >= .seconds(5) {
                print(
                    "[\(elapsed)s/\(Int(total))s \(phase)] \(Int(rate)) ops/s, \(operations) ops, errors \(errors), active sessions \(active)"
                )
                lastLine = now
            }
        }
        if interactive { print("") }
    }
}
