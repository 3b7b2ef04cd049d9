/// The reply to `INFO`, parsed: `field:value` lines, section headers and blank lines skipped.
///
/// ```swift
/// let info = RedisInfo(try await client.send(RESPCommand("INFO", "cpu")).string ?? "")
/// let cpuSeconds = (info.number("used_cpu_user") ?? 0) + (info.number("used_cpu_sys") ?? 0)
/// let gets = info.commandStatistics["get"]?.calls   // from INFO commandstats
/// ```
public struct RedisInfo: Sendable, Hashable {
    /// Calls and time of one command (`cmdstat_<name>:calls=…,usec=…` in `INFO commandstats`).
    public struct CommandStatistics: Sendable, Hashable {
        public var calls: Int
        /// Microseconds Redis spent in the command.
        public var microseconds: Int

        /// Statistics of `calls` calls that took `microseconds` in all.
        public init(calls: Int, microseconds: Int) {
            self.calls = calls
            self.microseconds = microseconds
        }
    }

    /// Every field, by name.
    public private(set) var fields: [String: String] = [:]

    /// Parses the text of an `INFO` reply.
    public init(_ text: String) {
        for line in text.split(whereSeparator: \.isNewline) where !line.hasPrefix("#") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
    }

    /// A field's value.
    public subscript(_ field: String) -> String? { fields[field] }

    /// A numeric field's value; nil when absent or not a number.
    public func number(_ field: String) -> Double? { fields[field].flatMap(Double.init) }

    /// Every numeric field (for summing over several nodes).
    public var numbers: [String: Double] { fields.compactMapValues(Double.init) }

    /// Per command (lower-case name, as Redis reports it), from `INFO commandstats`.
    public var commandStatistics: [String: CommandStatistics] {
        var statistics: [String: CommandStatistics] = [:]
        for (field, value) in fields where field.hasPrefix("cmdstat_") {
            var values: [Substring: Int] = [:]
            for pair in value.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let number = Int(parts[1]) { values[parts[0]] = number }
            }
            statistics[String(field.dropFirst("cmdstat_".count))] = CommandStatistics(
                calls: values["calls"] ?? 0, microseconds: values["usec"] ?? 0)
        }
        return statistics
    }
}
