import Foundation
import Histogram

/// The run's results: a terminal table, report.json, and a self-contained report.html.
struct Report {
    let parameters: LoadParameters
    let results: [WorkerResult]
    let checks: Checks
    let workerFailures: [String]

    var passed: Bool { checks.passed && workerFailures.isEmpty }

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

    private var perSecond: [Int] {
        var series: [Int] = []
        for result in results {
            for (second, count) in result.perSecond.enumerated() {
                while series.count <= second { series.append(0) }
                series[second] += count
            }
        }
        return series
    }

    private var opsPerSecond: Double {
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
        print("checks over \(checks.sessions) sessions:")
        print("  lost updates \(checks.lostUpdates), phantom updates \(checks.phantomUpdates)")
        print("  hooks missed \(checks.hooksMissed), duplicated \(checks.hooksDuplicated), sessions resurrected \(checks.resurrected)")
        print("  keys without a TTL \(checks.keysWithoutTTL.count), sessions still alive \(checks.aliveAtEnd)")
        for message in (workerFailures + checks.messages).prefix(20) { print("  FAILED: \(message)") }
        print(passed ? "all checks passed" : "CHECKS FAILED")
    }

    func printSummaryLine() {
        print(
            "{\"bench\":\"load\",\"instances\":\(parameters.instances),\"ops_per_s\":\(Int(opsPerSecond)),\"p99_ms\":\(String(format: "%.2f", Self.ms(all.valueAtPercentile(99)))),\"lost_updates\":\(checks.lostUpdates),\"hooks_missed\":\(checks.hooksMissed),\"hooks_duplicated\":\(checks.hooksDuplicated),\"resurrected\":\(checks.resurrected)}"
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
        var checks: Checks
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
            parameters: parameters, opsPerSecond: opsPerSecond, operations: operations, throughputPerSecond: perSecond,
            lockWaitP50Ms: Self.ms(lock.valueAtPercentile(50)), lockWaitP99Ms: Self.ms(lock.valueAtPercentile(99)),
            lockWaitMaxMs: Self.ms(lock.maxRecorded),
            expiryLatenessMs: latenessPercentiles, checks: checks, workerFailures: workerFailures, passed: passed)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: directory.appendingPathComponent("report.json"))
        try html(operations: operations, lateness: lateness).write(
            to: directory.appendingPathComponent("report.html"), atomically: true, encoding: .utf8)
    }

    // MARK: HTML (inline SVG, no scripts: works offline)

    private func html(operations: [JSONReport.Operation], lateness: Histogram<UInt64>) -> String {
        let throughput = lineChart(perSecond.map(Double.init), title: "Throughput over time (operations per second)", xLabel: "second")
        let percentiles = groupedBars(
            operations.map { ($0.name, [$0.p50Ms, $0.p90Ms, $0.p99Ms, $0.p999Ms]) }, series: ["p50", "p90", "p99", "p99.9"],
            title: "Latency percentiles per operation (ms)")
        var buckets: [(String, [Double])] = []
        for percentile in [10.0, 25, 50, 75, 90, 95, 99, 99.9, 100] {
            buckets.append(("p\(percentile)", [Double(lateness.valueAtPercentile(percentile))]))
        }
        let latenessChart = groupedBars(
            buckets, series: ["lateness ms"], title: "Expiry hook lateness distribution (ms, deadline to hook start)")
        let rows = operations.map {
            "<tr><td>\($0.name)</td><td>\($0.count)</td><td>\(String(format: "%.2f", $0.p50Ms))</td><td>\(String(format: "%.2f", $0.p90Ms))</td><td>\(String(format: "%.2f", $0.p99Ms))</td><td>\(String(format: "%.2f", $0.p999Ms))</td><td>\(String(format: "%.2f", $0.maxMs))</td></tr>"
        }.joined()
        let checkRows = [
            ("lost updates", checks.lostUpdates), ("phantom updates", checks.phantomUpdates), ("hooks missed", checks.hooksMissed),
            ("hooks duplicated", checks.hooksDuplicated), ("sessions resurrected", checks.resurrected),
            ("keys without TTL", checks.keysWithoutTTL.count),
        ].map { "<tr><td>\($0.0)</td><td class=\"\($0.1 == 0 ? "ok" : "bad")\">\($0.1)</td></tr>" }.joined()
        return """
            <!doctype html><html><head><meta charset="utf-8"><title>session-load report</title>
            <style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
            td:first-child{text-align:left}.ok{color:#080}.bad{color:#b00;font-weight:bold}svg{margin:1em 0;background:#fafafa}</style></head><body>
            <h1>session-load</h1>
            <p>\(parameters.instances) instances, \(parameters.users) users × \(parameters.tabs) tabs, \(Int(parameters.duration)) s, TTL \(parameters.ttl) s, seed \(parameters.seed): \
            <b>\(Int(opsPerSecond)) ops/s</b>, \(passed ? "<span class=ok>all checks passed</span>" : "<span class=bad>checks failed</span>")</p>
            \(throughput)
            <h2>Latency per operation (ms)</h2><table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\(rows)</table>
            \(percentiles)
            \(latenessChart)
            <h2>Checks</h2><table>\(checkRows)</table>
            </body></html>
            """
    }

    private func lineChart(_ values: [Double], title: String, xLabel: String) -> String {
        let width = 900.0
        let height = 240.0
        let top = max(1, values.max() ?? 1)
        let step = values.count > 1 ? (width - 60) / Double(values.count - 1) : 0
        let points = values.enumerated().map { index, value in
            String(format: "%.1f,%.1f", 50 + Double(index) * step, height - 30 - (value / top) * (height - 60))
        }.joined(separator: " ")
        return """
            <h2>\(title)</h2><svg width="\(Int(width))" height="\(Int(height))" role="img">
            <polyline fill="none" stroke="#2a6" stroke-width="2" points="\(points)"/>
            <text x="5" y="25" font-size="12">\(Int(top))</text><text x="5" y="\(Int(height) - 30)" font-size="12">0</text>
            <text x="\(Int(width) / 2)" y="\(Int(height) - 8)" font-size="12">\(xLabel)</text></svg>
            """
    }

    private func groupedBars(_ groups: [(String, [Double])], series: [String], title: String) -> String {
        let width = 900.0
        let height = 260.0
        let top = max(0.001, groups.flatMap(\.1).max() ?? 1)
        let colors = ["#2a6", "#27c", "#e80", "#c33"]
        let groupWidth = (width - 60) / Double(max(1, groups.count))
        let barWidth = groupWidth * 0.8 / Double(max(1, series.count))
        var bars = ""
        for (groupIndex, (name, values)) in groups.enumerated() {
            let x0 = 50 + Double(groupIndex) * groupWidth
            for (seriesIndex, value) in values.enumerated() {
                let barHeight = value / top * (height - 70)
                bars += String(
                    format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>%@ %@: %.2f</title></rect>",
                    x0 + Double(seriesIndex) * barWidth, height - 40 - barHeight, barWidth, barHeight, colors[seriesIndex % colors.count],
                    name,
                    series[seriesIndex], value)
            }
            bars += "<text x=\"\(Int(x0))\" y=\"\(Int(height) - 22)\" font-size=\"11\">\(name)</text>"
        }
        let legend = series.enumerated().map { index, name in
            "<rect x=\"\(60 + index * 90)\" y=\"8\" width=\"12\" height=\"12\" fill=\"\(colors[index % colors.count])\"/><text x=\"\(76 + index * 90)\" y=\"19\" font-size=\"12\">\(name)</text>"
        }.joined()
        return """
            <h2>\(title)</h2><svg width="\(Int(width))" height="\(Int(height))" role="img">\(legend)\(bars)
            <text x="5" y="35" font-size="12">\(String(format: "%.1f", top))</text></svg>
            """
    }
}
