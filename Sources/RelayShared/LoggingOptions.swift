import Logging

extension Observability {
    /// The level from a `--log-level` value; unknown names are an error that lists the valid ones.
    public static func level(_ text: String) -> Logger.Level? { Logger.Level(rawValue: text.lowercased()) }

    /// Logging and metrics for a long-running command (`serve`, `run`).
    public static func start(label: String, level: String, format: String?) throws -> Logger {
        guard let parsed = Self.level(level) else {
            throw ObservabilityError.badOption("--log-level \(level): use one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var chosen: LogFormat?
        if let format {
            guard let value = LogFormat(rawValue: format) else {
                throw ObservabilityError.badOption("--log-format \(format): use text or json")
            }
            chosen = value
        }
        bootstrapLogging(format: chosen, level: parsed)
        bootstrapMetrics()
        var logger = Logger(label: label)
        logger.logLevel = parsed
        return logger
    }
}

public enum ObservabilityError: Error, CustomStringConvertible {
    case badOption(String)
    public var description: String { if case .badOption(let message) = self { message } else { "" } }
}
