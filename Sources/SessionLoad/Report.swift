import Foundation
import Histogram
import LoadVerdict

/// The run's results: a terminal table, report.json, and a self-contained report.html.
struct Report {
    let parameters: LoadParameters
    let results: [WorkerResult]
    let verdict: Verdict
    let workerFailures: [String]
    /// Faults and the drain, on the run's timeline.
    let marks: [Coordinator.Mark]
    /// The data Redis over time.
    let samples: [Coordinator.RedisSample]

    var passed: Bool { verdict.passed && workerFailures.isEmpty }

    private var latencies: [(String, Histogram<UInt64>)] {
        LoadOperation.allCases.compactMap { operation in
            var merged = LoadHistogram.make()
            var any = false
            for result in results {
                if let histogram = result.latencies[operation.rawValue] {
                    merged.add(histogram)
                    any = true
                }
            }
            return any ? (operation.rawValue, merged) : nil
        }
    }

    private var all: Histogram<UInt64> {
        var merged = LoadHistogram.make()
        for (_, histogram) in latencies { merged.add(histogram) }
        return merged
    }

    private var perSecond: [Int] { series(\.perSecond) }

    /// A per-second series summed over the workers.
    private func series(_ path: KeyPath<WorkerResult, [Int]>) -> [Int] { results.perSecond(path) }

    /// p99 of every operation, in milliseconds.
    var p99Milliseconds: Double { Self.ms(all.valueAtPercentile(99)) }

    /// Errors of every worker (expected ones, such as a session that ended under a tab, excluded).
    var errorCount: Int { results.reduce(0) { $0 + $1.errors.values.reduce(0, +) } }

    var opsPerSecond: Double {
        let total = perSecond.prefix(Int(parameters.duration)).reduce(0, +)
        return Double(total) / max(1, parameters.duration)
    }

    private func merged(_ path: KeyPath<WorkerResult, Histogram<UInt64>>) -> Histogram<UInt64> {
        var merged = LoadHistogram.make()
        for result in results { merged.add(result[keyPath: path]) }
        return merged
    }

    private static func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }

    // MARK: Terminal

    func printTable() {
        print("")
        print(
            "session-load: \(parameters.instances) instances, \(parameters.users) users x \(parameters.tabs) tabs, \(Int(parameters.duration)) s, TTL \(parameters.ttl) s, seed \(parameters.seed)"
        )
        print("operation      count      ops/s     p50 ms    p90 ms    p99 ms  p99.9 ms     max ms")
        for (name, histogram) in latencies + [("all", all)] {
            print(
                name.padding(toLength: 12, withPad: " ", startingAt: 0)
                    + String(
                        format: "%8d %10.0f %10.2f %9.2f %9.2f %9.2f %10.2f", histogram.totalCount,
                        Double(histogram.totalCount) / max(1, parameters.duration), Self.ms(histogram.valueAtPercentile(50)),
                        Self.ms(histogram.valueAtPercentile(90)), Self.ms(histogram.valueAtPercentile(99)),
                        Self.ms(histogram.valueAtPercentile(99.9)), Self.ms(histogram.maxRecorded)))
        }
        let lock = merged(\.lockWait)
        let lateness = merged(\.expiryLateness)
        print(
            String(
                format: "lock waits: %d, p50 %.2f ms, p99 %.2f ms, max %.2f ms; stale writes rejected: %d", lock.totalCount,
                Self.ms(lock.valueAtPercentile(50)), Self.ms(lock.valueAtPercentile(99)), Self.ms(lock.maxRecorded),
                results.reduce(0) { $0 + $1.staleRejected }))
        print(
            "expiry hooks: \(results.reduce(0) { $0 + $1.hooks }) ran; lateness p50 \(lateness.valueAtPercentile(50)) ms, p99 \(lateness.valueAtPercentile(99)) ms, max \(lateness.maxRecorded) ms"
        )
        let errors = results.reduce(into: [String: Int]()) { total, result in total.merge(result.errors, uniquingKeysWith: +) }
        for (error, count) in errors.sorted(by: { $0.value > $1.value }).prefix(5) { print("error x\(count): \(error)") }
        if parameters.rate > 0 {
            let shed = results.reduce(0) { $0 + $1.shed }
            print(String(format: "open loop at %.0f ops/s (latency from the scheduled start); %d arrivals shed", parameters.rate, shed))
        }
        for mark in marks { print(String(format: "  %6.1f s  %@", mark.second, mark.event)) }
        let v = verdict
        print("checks over \(v.sessions) sessions (\(v.ended) ended):")
        print(
            "  increments: \(v.okIncrements) acknowledged, \(v.indeterminateIncrements) indeterminate; lost updates \(v.lostUpdates), phantoms \(v.unexplainedPhantoms) unexplained (\(v.explainedPhantoms) explained by indeterminate writes)"
        )
        print(
            "  hooks missed \(v.hooksMissed), duplicated \(v.hooksDuplicatedUnexplained) unexplained (\(v.hooksDuplicatedExplained) after a killed worker), sessions resurrected \(v.resurrected)"
        )
        if v.lostToAsyncReplication > 0 {
            print(
                "  lost to asynchronous replication at the failover: \(v.lostToAsyncReplication) acknowledged increments (up to \(v.asyncReplicationAllowance) may be; --replica-wait 1 prevents it)"
            )
            for note in v.notes.prefix(20) { print("  note: \(note)") }
        }
        print("  keys without a TTL \(v.keysWithoutTTL), hangs \(v.hangs)")
        for message in (workerFailures + v.messages).prefix(20) { print("  FAILED: \(message)") }
        print(passed ? "all checks passed" : "CHECKS FAILED")
    }

    /// Increments acknowledged in the second before the first kill of Redis: with appendfsync
    /// everysec, at most these may be lost.
    private var incrementsInSecondBeforeKill: Int? {
        guard let kill = parameters.faults.faults.first(where: { $0.kind == .kill }) else { return nil }
        let increments = series(\.incrementsPerSecond)
        let second = Int(kill.at) - 1
        return second >= 0 && second < increments.count ? increments[second] : 0
    }

    func printSummaryLine() {
        let v = verdict
        var faultFields = incrementsInSecondBeforeKill.map { ",\"increments_in_second_before_kill\":\($0)" } ?? ""
        if parameters.faults.faults.contains(where: { $0.kind == .failover }) {
            faultFields += ",\"lost_to_async_replication\":\(v.lostToAsyncReplication)"
        }
        print(
            "{\"bench\":\"load\",\"instances\":\(parameters.instances),\"ops_per_s\":\(Int(opsPerSecond)),\"p99_ms\":\(String(format: "%.2f", Self.ms(all.valueAtPercentile(99)))),\"passed\":\(passed),\"lost_updates\":\(v.lostUpdates),\"unexplained_phantoms\":\(v.unexplainedPhantoms),\"hooks_missed\":\(v.hooksMissed),\"hooks_duplicated_unexplained\":\(v.hooksDuplicatedUnexplained),\"resurrected\":\(v.resurrected),\"keys_without_ttl\":\(v.keysWithoutTTL),\"hangs\":\(v.hangs),\"indeterminate\":\(v.indeterminateIncrements)\(faultFields)}"
        )
    }

    // MARK: Files

    private struct JSONReport: Encodable {
        struct Operation: Encodable {
            var name: String
            var count: UInt64
            var p50Ms, p90Ms, p99Ms, p999Ms, maxMs: Double
        }
        var parameters: LoadParameters
        var opsPerSecond: Double
        var operations: [Operation]
        var throughputPerSecond: [Int]
        var lockWaitP50Ms, lockWaitP99Ms, lockWaitMaxMs: Double
        var expiryLatenessMs: [String: UInt64]
        var verdict: Verdict
        var marks: [Coordinator.Mark]
        var redis: [Coordinator.RedisSample]
        var errorsPerSecond: [Int]
        var indeterminatePerSecond: [Int]
        var workerFailures: [String]
        var passed: Bool
    }

    func write(to directory: URL) throws {
        let operations = (latencies + [("all", all)]).map { name, histogram in
            JSONReport.Operation(
                name: name, count: histogram.totalCount, p50Ms: Self.ms(histogram.valueAtPercentile(50)),
                p90Ms: Self.ms(histogram.valueAtPercentile(90)), p99Ms: Self.ms(histogram.valueAtPercentile(99)),
                p999Ms: Self.ms(histogram.valueAtPercentile(99.9)), maxMs: Self.ms(histogram.maxRecorded))
        }
        let lock = merged(\.lockWait)
        let lateness = merged(\.expiryLateness)
        var latenessPercentiles: [String: UInt64] = [:]
        for percentile in [50.0, 90, 99, 99.9, 100] { latenessPercentiles["p\(percentile)"] = lateness.valueAtPercentile(percentile) }
        let report = JSONReport(
            parameters: parameters.redacted, opsPerSecond: opsPerSecond, operations: operations, throughputPerSecond: perSecond,
            lockWaitP50Ms: Self.ms(lock.valueAtPercentile(50)), lockWaitP99Ms: Self.ms(lock.valueAtPercentile(99)),
            lockWaitMaxMs: Self.ms(lock.maxRecorded),
            expiryLatenessMs: latenessPercentiles, verdict: verdict, marks: marks, redis: samples,
            errorsPerSecond: series(\.errorsPerSecond),
            indeterminatePerSecond: series(\.indeterminatePerSecond), workerFailures: workerFailures, passed: passed)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: directory.appendingPathComponent("report.json"))
        try html(operations: operations, lateness: lateness).write(
            to: directory.appendingPathComponent("report.html"), atomically: true, encoding: .utf8)
    }

    // MARK: HTML (inline SVG, no scripts: works offline)

    private func html(operations: [JSONReport.Operation], lateness: Histogram<UInt64>) -> String {
        let throughput = lineChart(
            perSecond.map(Double.init), title: "Throughput over time", yLabel: "operations per second", xLabel: "time (s)")
        let errors = lineChart(
            series(\.errorsPerSecond).map(Double.init), title: "Errors over time (indeterminate ones in red)", yLabel: "errors per second",
            xLabel: "time (s)", second: series(\.indeterminatePerSecond).map(Double.init))
        // Redis, one value per second of the run (a gap where it did not answer is drawn as 0).
        func redisPerSecond(_ value: (Coordinator.RedisSample) -> Double?) -> [Double] {
            var series: [Double] = []
            for sample in samples {
                let second = Int(sample.second)
                while series.count <= second { series.append(0) }
                series[second] = value(sample) ?? 0
            }
            return series
        }
        let redisCPU = lineChart(
            redisPerSecond { $0.cpu.map { $0 * 100 } }, title: "Redis CPU over time", yLabel: "% of one core", xLabel: "time (s)")
        let redisMemory = lineChart(
            redisPerSecond { $0.usedMemoryBytes.map { $0 / 1_048_576 } }, title: "Redis memory over time", yLabel: "used memory (MiB)",
            xLabel: "time (s)")
        let redisClients = lineChart(
            redisPerSecond(\.connectedClients), title: "Redis connected clients over time", yLabel: "clients", xLabel: "time (s)",
            second: redisPerSecond(\.opsPerSecond).map { $0 / 1000 })
        let timeline = marks.map { String(format: "<tr><td>%.1f s</td><td>%@</td></tr>", $0.second, $0.event) }.joined()
        let percentiles = groupedBars(
            operations.map { ($0.name, [$0.p50Ms, $0.p90Ms, $0.p99Ms, $0.p999Ms]) }, series: ["p50", "p90", "p99", "p99.9"],
            title: "Latency percentiles per operation", yLabel: "latency (ms)", xLabel: "operation")
        var buckets: [(String, [Double])] = []
        for percentile in [10.0, 25, 50, 75, 90, 95, 99, 99.9, 100] {
            buckets.append(("p\(percentile)", [Double(lateness.valueAtPercentile(percentile))]))
        }
        let latenessChart = groupedBars(
            buckets, series: ["lateness"], title: "Expiry hook lateness distribution (deadline to hook start)",
            yLabel: "lateness (ms)", xLabel: "percentile")
        let rows = operations.map {
            "<tr><td>\($0.name)</td><td>\($0.count)</td><td>\(String(format: "%.2f", $0.p50Ms))</td><td>\(String(format: "%.2f", $0.p90Ms))</td><td>\(String(format: "%.2f", $0.p99Ms))</td><td>\(String(format: "%.2f", $0.p999Ms))</td><td>\(String(format: "%.2f", $0.maxMs))</td></tr>"
        }.joined()
        let v = verdict
        let checkRows = [
            ("lost updates", v.lostUpdates), ("unexplained phantoms", v.unexplainedPhantoms), ("hooks missed", v.hooksMissed),
            ("hooks duplicated (unexplained)", v.hooksDuplicatedUnexplained), ("sessions resurrected", v.resurrected),
            ("keys without TTL", v.keysWithoutTTL), ("hangs", v.hangs),
        ].map { "<tr><td>\($0.0)</td><td class=\"\($0.1 == 0 ? "ok" : "bad")\">\($0.1)</td></tr>" }.joined()
        let facts = [
            ("sessions judged", v.sessions), ("ended", v.ended), ("increments acknowledged", v.okIncrements),
            ("increments indeterminate", v.indeterminateIncrements), ("phantoms explained by indeterminate writes", v.explainedPhantoms),
            ("duplicate hooks after a killed worker", v.hooksDuplicatedExplained),
        ].map { "<tr><td>\($0.0)</td><td>\($0.1)</td></tr>" }.joined()
        let offending = (workerFailures + v.messages).prefix(50).map { "<li>\($0)</li>" }.joined()
        return """
            <!doctype html><html><head><meta charset="utf-8"><title>session-load report</title>
            <style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
            td:first-child{text-align:left}.ok{color:#080}.bad{color:#b00;font-weight:bold}svg{margin:1em 0;background:#fafafa}</style></head><body>
            <h1>session-load</h1>
            <p>\(parameters.instances) instances, \(parameters.users) users × \(parameters.tabs) tabs, \(Int(parameters.duration)) s, TTL \(parameters.ttl) s, seed \(parameters.seed): \
            <b>\(Int(opsPerSecond)) ops/s</b>, \(passed ? "<span class=ok>all checks passed</span>" : "<span class=bad>checks failed</span>")</p>
            <h2>Timeline</h2><table><tr><th>time</th><th>event</th></tr>\(timeline)</table>
            \(throughput)
            \(errors)
            \(redisCPU)
            \(redisMemory)
            \(redisClients)<p>(red: thousands of Redis operations per second, from INFO)</p>
            <h2>Latency per operation (ms)</h2><table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\(rows)</table>
            \(percentiles)
            \(latenessChart)
            <h2>Checks</h2><table>\(checkRows)</table><table>\(facts)</table><ul>\(offending)</ul>
            </body></html>
            """
    }

    /// A line chart with labelled axes; fault and drain marks as vertical lines.
    private func lineChart(_ values: [Double], title: String, yLabel: String, xLabel: String, second: [Double] = []) -> String {
        let width = 900.0
        let height = 260.0
        let (left, bottom, topMargin) = (70.0, 40.0, 20.0)
        let count = max(values.count, second.count, 2)
        let top = max(1, values.max() ?? 1, second.max() ?? 1)
        let step = (width - left - 10) / Double(count - 1)
        func x(_ index: Double) -> Double { left + index * step }
        func y(_ value: Double) -> Double { height - bottom - (value / top) * (height - bottom - topMargin) }
        func line(_ series: [Double], color: String) -> String {
            let points = series.enumerated().map { String(format: "%.1f,%.1f", x(Double($0)), y($1)) }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
        }
        var ticks = ""
        let every = max(1, count / 10)
        for index in stride(from: 0, to: count, by: every) {
            ticks += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">%d</text>", x(Double(index)),
                height - bottom + 14, index)
        }
        for fraction in [0.0, 0.5, 1.0] {
            ticks += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.0f</text>", left - 6, y(top * fraction) + 4,
                top * fraction)
        }
        let markLines = marks.map { mark in
            String(
                format:
                    "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#b00\" stroke-dasharray=\"4 3\"><title>%@</title></line>",
                x(mark.second), x(mark.second), topMargin, height - bottom, mark.event)
        }.joined()
        return """
            <h2>\(title)</h2><svg width="\(Int(width))" height="\(Int(height))" role="img" aria-label="\(title)">
            <line class="axis x" x1="\(left)" y1="\(height - bottom)" x2="\(width - 10)" y2="\(height - bottom)" stroke="#333"/>
            <line class="axis y" x1="\(left)" y1="\(topMargin)" x2="\(left)" y2="\(height - bottom)" stroke="#333"/>
            \(ticks)\(markLines)\(line(values, color: "#2a6"))\(second.isEmpty ? "" : line(second, color: "#c33"))
            <text class="axis-label x" x="\(Int(width) / 2)" y="\(Int(height) - 6)" font-size="12" text-anchor="middle">\(xLabel)</text>
            <text class="axis-label y" x="14" y="\(Int(height / 2))" font-size="12" text-anchor="middle" transform="rotate(-90 14 \(Int(height / 2)))">\(yLabel)</text></svg>
            """
    }

    private func groupedBars(_ groups: [(String, [Double])], series: [String], title: String, yLabel: String, xLabel: String) -> String {
        let width = 900.0
        let height = 280.0
        let (left, bottom, topMargin) = (70.0, 50.0, 30.0)
        let top = max(0.001, groups.flatMap(\.1).max() ?? 1)
        let colors = ["#2a6", "#27c", "#e80", "#c33"]
        let groupWidth = (width - left - 10) / Double(max(1, groups.count))
        let barWidth = groupWidth * 0.8 / Double(max(1, series.count))
        var bars = ""
        for (groupIndex, (name, values)) in groups.enumerated() {
            let x0 = left + Double(groupIndex) * groupWidth
            for (seriesIndex, value) in values.enumerated() {
                let barHeight = value / top * (height - bottom - topMargin)
                bars += String(
                    format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>%@ %@: %.2f</title></rect>",
                    x0 + Double(seriesIndex) * barWidth, height - bottom - barHeight, barWidth, barHeight,
                    colors[seriesIndex % colors.count],
                    name, series[seriesIndex], value)
            }
            bars +=
                "<text x=\"\(Int(x0 + groupWidth * 0.4))\" y=\"\(Int(height - bottom + 14))\" font-size=\"11\" text-anchor=\"middle\">\(name)</text>"
        }
        var ticks = ""
        for fraction in [0.0, 0.5, 1.0] {
            ticks += String(
                format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.1f</text>", left - 6,
                height - bottom - fraction * (height - bottom - topMargin) + 4, top * fraction)
        }
        let legend = series.enumerated().map { index, name in
            "<rect x=\"\(Int(left) + 10 + index * 90)\" y=\"8\" width=\"12\" height=\"12\" fill=\"\(colors[index % colors.count])\"/><text x=\"\(Int(left) + 26 + index * 90)\" y=\"19\" font-size=\"12\">\(name)</text>"
        }.joined()
        return """
            <h2>\(title)</h2><svg width="\(Int(width))" height="\(Int(height))" role="img" aria-label="\(title)">\(legend)\(bars)\(ticks)
            <line class="axis x" x1="\(left)" y1="\(height - bottom)" x2="\(width - 10)" y2="\(height - bottom)" stroke="#333"/>
            <line class="axis y" x1="\(left)" y1="\(topMargin)" x2="\(left)" y2="\(height - bottom)" stroke="#333"/>
            <text class="axis-label x" x="\(Int(width) / 2)" y="\(Int(height) - 8)" font-size="12" text-anchor="middle">\(xLabel)</text>
            <text class="axis-label y" x="14" y="\(Int(height / 2))" font-size="12" text-anchor="middle" transform="rotate(-90 14 \(Int(height / 2)))">\(yLabel)</text></svg>
            """
    }
}

extension [WorkerResult] {
    /// A per-second series of the workers' results, summed over the workers.
    func perSecond(_ path: KeyPath<WorkerResult, [Int]>) -> [Int] {
        var series: [Int] = []
        for result in self {
            for (second, count) in result[keyPath: path].enumerated() {
                while series.count <= second { series.append(0) }
                series[second] += count
            }
        }
        return series
    }
}
