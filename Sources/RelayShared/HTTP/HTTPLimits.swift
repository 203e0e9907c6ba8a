import Logging

/// Resource limits of one HTTP listener (the relay's `http:`, the agent's `listen:`), set by
/// `httpLimits:` in relay.yaml / agent.yaml.
///
/// - `maxConnections`: connections open at once. At the cap, the connection that has waited
///   longest for a request (an idle keep-alive, or one whose headers are still incomplete) is
///   closed to make room; when every connection is busy with a request, newcomers get an
///   immediate `503` with `Retry-After` (on HTTPS: a close).
/// - `headerTimeout`: a new connection must deliver a complete request head within this time,
///   and so must a kept-alive one once the next request has begun to arrive.
/// - `idleTimeout`: a connection with no request in progress is closed after this long. A
///   response being written (e.g. a server-sent event stream) is never cut by it.
public struct HTTPLimits: Sendable, Equatable, CustomStringConvertible {
    public var maxConnections: Int
    public var headerTimeout: Duration
    public var idleTimeout: Duration

    public init(maxConnections: Int, headerTimeout: Duration, idleTimeout: Duration) {
        self.maxConnections = maxConnections
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    /// relay-server's `http:` (webhooks, status API and stream, page, probes, metrics).
    public static let relayDefaults = HTTPLimits(maxConnections: 1024, headerTimeout: .seconds(10), idleTimeout: .seconds(60))
    /// relay-agent's `listen:` (Flux's controllers and probes).
    public static let agentDefaults = HTTPLimits(maxConnections: 256, headerTimeout: .seconds(10), idleTimeout: .seconds(60))

    /// `httpLimits:` as written (every field optional).
    public struct Settings: Sendable, Decodable {
        public var maxConnections: Int?
        public var headerTimeout: ConfigDuration?
        public var idleTimeout: ConfigDuration?
    }

    /// The defaults overridden by `settings`; errors name the field.
    public static func resolve(_ settings: Settings?, defaults: HTTPLimits, file: String,
                               field: String = "httpLimits") throws(ConfigError) -> HTTPLimits {
        var limits = defaults
        guard let settings else { return limits }
        func fail(_ name: String, _ message: String) -> ConfigError {
            ConfigError(file: file, field: "\(field).\(name)", message: message)
        }
        if let value = settings.maxConnections {
            guard (1...1_000_000).contains(value) else { throw fail("maxConnections", "must be 1…1000000") }
            limits.maxConnections = value
        }
        if let value = settings.headerTimeout?.duration {
            guard value >= .milliseconds(100), value <= .seconds(600) else { throw fail("headerTimeout", "must be 100ms…10m") }
            limits.headerTimeout = value
        }
        if let value = settings.idleTimeout?.duration {
            guard value >= .seconds(1), value <= .seconds(3600) else { throw fail("idleTimeout", "must be 1s…1h") }
            limits.idleTimeout = value
        }
        return limits
    }

    /// These limits with the cap lowered, when needed, so that the listener's connections
    /// (`descriptorsPerConnection` each: the socket, plus a file being served) use at most
    /// half of the process's descriptors: the rest stay for the tunnel, the database,
    /// packaging and the store.
    public func fitting(descriptorLimit: Int, descriptorsPerConnection: Int = 1) -> HTTPLimits {
        var fitted = self
        fitted.maxConnections = max(1, min(maxConnections, descriptorLimit / 2 / max(1, descriptorsPerConnection)))
        return fitted
    }

    /// Raises the process's descriptor limit to the hard limit, and returns these limits
    /// fitted to it (`fitting`), with a warning naming the field when the cap was lowered.
    public func fittedToDescriptors(perConnection: Int = 1, logger: Logger) -> HTTPLimits {
        let descriptors = FileDescriptorLimit.raiseToHard()
        let fitted = fitting(descriptorLimit: descriptors, descriptorsPerConnection: perConnection)
        if fitted.maxConnections < maxConnections {
            logger.warning("httpLimits.maxConnections lowered to fit the open-file limit: raise the limit (ulimit -n, LimitNOFILE=) or lower httpLimits.maxConnections",
                           metadata: ["configured": "\(maxConnections)", "used": "\(fitted.maxConnections)", "openFileLimit": "\(descriptors)"])
        }
        return fitted
    }

    public var description: String {
        "maxConnections \(maxConnections), headerTimeout \(headerTimeout), idleTimeout \(idleTimeout)"
    }
}
