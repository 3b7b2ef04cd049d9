import Foundation
import Histogram
import MallocStatistics
import NIOConcurrencyHelpers

/// What a worker reports about itself over a long run (`scripts/soak`): every 10 seconds its live
/// heap as the allocator counts it (RSS and the rest are sampled from outside, in `/proc`), and
/// every minute the p99 of the operations that minute. One JSON object per line in
/// `$SESSION_LOAD_SAMPLES/worker-<index>.jsonl`; nothing when the variable is unset.
final class Samples: Sendable {
    private let file: URL
    private let start = ContinuousClock.now
    private let minute = NIOLockedValueBox(LoadHistogram.make())

    init?(worker index: Int) {
        guard let directory = ProcessInfo.processInfo.environment["SESSION_LOAD_SAMPLES"], !directory.isEmpty else { return nil }
        file = URL(fileURLWithPath: directory).appendingPathComponent("worker-\(index).jsonl")
        FileManager.default.createFile(atPath: file.path, contents: nil)
    }

    /// One operation's latency, for this minute's p99.
    func record(microseconds: UInt64) {
        minute.withLockedValue { _ = $0.record(microseconds) }
    }

    /// Samples until cancelled.
    func run() async {
        var tick = 0
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(10)) } catch { return }
            tick += 1
            let t = Double((ContinuousClock.now - start).components.seconds)
            append(["t": t, "heap_in_use_bytes": Double(malloc_statistics_in_use())])
            guard tick % 6 == 0 else { continue }
            let p99 = minute.withLockedValue { histogram -> UInt64 in
                defer { histogram.reset() }
                return histogram.totalCount == 0 ? 0 : histogram.valueAtPercentile(99)
            }
            append(["t": t, "p99_ms_last_minute": Double(p99) / 1000])
        }
    }

    private func append(_ line: [String: Double]) {
        guard var data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]),
            let handle = try? FileHandle(forWritingTo: file)
        else { return }
        data.append(UInt8(ascii: "\n"))
        handle.seekToEndOfFile()
        handle.write(data)
        try? handle.close()
    }
}
