import Foundation
import Logging
import Metrics
import Prometheus
import Synchronization

/// Metrics and logs for both processes.
///
/// Metrics go through swift-metrics (so libraries' metrics land in the same place) into a
/// Prometheus registry that `GET /metrics` renders in the text exposition format.
public enum Observability {
    public static let registry = PrometheusCollectorRegistry()
    private static let bootstrapped = Atomic<Bool>(false)

    /// Installs the Prometheus backend (once per process; later calls do nothing).
    public static func bootstrapMetrics() {
        guard bootstrapped.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                                   .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                                   .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60)]
        MetricsSystem.bootstrap(factory)
    }

    /// The current metrics in Prometheus' text format.
    public static func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    public enum LogFormat: String, Sendable, CaseIterable {
        case text, json
    }

    /// Text on a terminal, JSON when asked (`--log-format json` or `RELAY_LOG_FORMAT=json`).
    public static func bootstrapLogging(format: LogFormat?, level: Logger.Level) {
        let chosen = format ?? ProcessInfo.processInfo.environment["RELAY_LOG_FORMAT"].flatMap(LogFormat.init(rawValue:)) ?? .text
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = chosen == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// One JSON object per line on standard error: `time`, `level`, `label`, `message`,
/// `source`, then the metadata. swift-log ships only a text handler, hence this one.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    private static let lock = NSLock()

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (level, message, explicit, source) = (event.level, event.message, event.metadata, event.source)
        var fields: [String: String] = [:]
        for (key, value) in self.metadata.merging(metadataProvider?.get() ?? [:], uniquingKeysWith: { $1 })
            .merging(explicit ?? [:], uniquingKeysWith: { $1 }) {
            fields[key] = "\(value)"
        }
        var object: [String: String] = fields
        object["time"] = RFC3339.format(Date(), milliseconds: true)
        object["level"] = level.rawValue
        object["label"] = label
        object["message"] = message.description
        object["source"] = source
        if let error = event.error { object["error"] = "\(error)" }
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        data.append(UInt8(ascii: "\n"))
        Self.lock.lock()
        FileHandle.standardError.write(data)
        Self.lock.unlock()
    }
}
