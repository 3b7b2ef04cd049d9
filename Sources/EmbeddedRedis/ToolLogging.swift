import Logging

/// Logging for the tools (benchmarks, the load driver, the example) and the test helpers: whatever
/// the libraries log at warning level and above goes to standard error, so that standard output
/// keeps only the tool's result (the last JSON line, the worker protocol).
public enum ToolLogging {
    private static let bootstrapped: Void = {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
    }()

    /// Bootstraps the logging system once; later calls do nothing.
    public static func bootstrap() { _ = bootstrapped }
}
