/// The faults a `session-load` run injects, parsed from `--faults`:
/// `pause:3s@5s,kill@8s,worker-kill@6s,blackhole:2s@12s,failover@15s,reshard@18s,partition:4s@20s`.
///
/// Each item is `kind[:duration]@at`: `at` is seconds from the start of the load, `duration`
/// (for pause, blackhole and partition) how long the fault lasts. Durations take `ms` or `s`.
public struct FaultPlan: Sendable, Hashable, Codable {
    /// One fault.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// SIGSTOP the Redis server for `duration`, then SIGCONT.
        case pause
        /// SIGKILL the Redis server and restart it from its append-only file.
        case kill
        /// SIGKILL one worker process (its sessions' hooks must be taken over).
        case workerKill = "worker-kill"
        /// Drop the traffic between the workers and Redis for `duration` (no RST).
        case blackhole
        /// SIGKILL the primary of a cluster or a Sentinel group and let its replica be promoted
        /// (what asynchronous replication had not copied is lost); the old primary comes back as
        /// a replica.
        case failover
        /// Add a primary to a cluster and move to it, one by one while the load goes on, up to 12
        /// of the slots that hold the run's keys.
        case reshard
        /// Cut one primary of a cluster off from the workers, its replica and the other nodes for
        /// `duration`, as a broken network would (it keeps running). Longer than the cluster's
        /// node timeout, its replica is promoted; when the network is back the old primary
        /// follows it.
        case partition
    }

    public struct Fault: Sendable, Hashable, Codable {
        public var kind: Kind
        /// Seconds after the load started.
        public var at: Double
        /// Seconds the fault lasts (pause, blackhole, partition); 0 otherwise.
        public var duration: Double

        public init(kind: Kind, at: Double, duration: Double = 0) {
            self.kind = kind
            self.at = at
            self.duration = duration
        }

        /// `pause:3s@5s`.
        public var description: String {
            let length = duration > 0 ? ":\(Self.format(duration))" : ""
            return "\(kind.rawValue)\(length)@\(Self.format(at))"
        }

        private static func format(_ seconds: Double) -> String {
            seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(Int((seconds * 1000).rounded()))ms"
        }
    }

    /// A malformed `--faults` value: what was wrong and where.
    public struct ParseError: Error, Hashable, CustomStringConvertible {
        public let description: String
    }

    /// The faults, in time order.
    public var faults: [Fault]

    public init(_ faults: [Fault] = []) {
        self.faults = faults.sorted { $0.at < $1.at }
    }

    /// Parses `pause:3s@5s,kill@8s`; an empty string is no faults.
    public init(parsing text: String) throws(ParseError) {
        var faults: [Fault] = []
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: " ") }) where !item.isEmpty {
            let halves = item.split(separator: "@", omittingEmptySubsequences: false)
            guard halves.count == 2, let at = Self.seconds(halves[1]) else {
                throw ParseError(description: "'\(item)': expected kind[:duration]@time, e.g. pause:3s@5s")
            }
            let head = halves[0].split(separator: ":", omittingEmptySubsequences: false)
            guard let kind = Kind(rawValue: String(head[0])) else {
                throw ParseError(
                    description: "'\(item)': unknown fault '\(head[0])' (pause, kill, worker-kill, blackhole, failover, reshard, partition)"
                )
            }
            var duration = 0.0
            switch kind {
            case .pause, .blackhole, .partition:
                guard head.count == 2, let parsed = Self.seconds(head[1]), parsed > 0 else {
                    throw ParseError(description: "'\(item)': \(kind.rawValue) needs a duration, e.g. \(kind.rawValue):3s@5s")
                }
                duration = parsed
            case .kill, .workerKill, .failover, .reshard:
                guard head.count == 1 else { throw ParseError(description: "'\(item)': \(kind.rawValue) takes no duration") }
            }
            faults.append(Fault(kind: kind, at: at, duration: duration))
        }
        self.init(faults)
    }

    /// `3s`, `250ms`, `1.5s` or a bare number of seconds.
    private static func seconds(_ text: Substring) -> Double? {
        let value: Double?
        if text.hasSuffix("ms") {
            value = Double(text.dropLast(2)).map { $0 / 1000 }
        } else if text.hasSuffix("s") {
            value = Double(text.dropLast())
        } else {
            value = Double(text)
        }
        guard let value, value >= 0, value.isFinite else { return nil }
        return value
    }

    /// The plan as `--faults` takes it.
    public var description: String { faults.map(\.description).joined(separator: ",") }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var text = Substring(self)
        while text.first == set { text = text.dropFirst() }
        while text.last == set { text = text.dropLast() }
        return String(text)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: Character) -> String { String(self).trimmingCharacters(in: set) }
}
