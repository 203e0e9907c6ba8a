import Foundation
import RelayShared

/// `agent.yaml`. Every field is documented in the README.
public struct AgentConfig: Sendable, ConfigFile {
    /// The relay's tunnel address, host:port.
    public var relay: String
    /// CA bundle (PEM) that signed the relay's certificate.
    public var caFile: String
    /// The agent's bearer token.
    public var tokenFile: String
    public var dataDir: String
    /// Flux-facing HTTP: OCI registry and artifact URLs, host:port.
    public var listen: String?
    /// Which Flux integrations are on (needs `listen`).
    public var flux: FluxConfig?
    /// Client certificate and key when the relay requires mutual TLS.
    public var clientCertFile: String?
    public var clientKeyFile: String?
    /// Reconnect backoff: first delay and cap.
    public var reconnectInitial: ConfigDuration?
    public var reconnectMax: ConfigDuration?
    /// Published artifacts kept per source (older ones stay for readers until then).
    public var keep: Int?
    /// A replaced artifact stays servable at least this long (default 1m).
    public var keepReplacedFor: ConfigDuration?
    /// Unacknowledged status entries kept on disk at most (bytes, default 32 MiB).
    public var journalMaxBytes: Int?
    /// Connection cap and timeouts of the `listen` endpoint.
    public var httpLimits: HTTPLimits.Settings?

    // `load(path:)` and `parse(yaml:baseDirectory:)` come with `ConfigFile`.
    public static let fileName = "agent.yaml"

    public func resolve(file: String, base: URL) throws(ConfigError) -> ResolvedAgentConfig {
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : base.appendingPathComponent(path).standardizedFileURL.path
        }
        func fail(_ field: String, _ message: String) -> ConfigError { ConfigError(file: file, field: field, message: message) }
        func readable(_ path: String, _ field: String) throws(ConfigError) -> String {
            let full = absolute(path)
            guard FileManager.default.isReadableFile(atPath: full) else { throw fail(field, "cannot read \(full)") }
            return full
        }
        guard let relay = HostPort(relay), relay.port > 0 else { throw fail("relay", "expected host:port, e.g. relay.example.com:8443") }
        let ca = try readable(caFile, "caFile")
        let tlsFiles = TLSFileCheck(configFile: file)
        try tlsFiles.certificates(ca, field: "caFile")
        let token: String
        do { token = try TokenHash.readToken(file: absolute(tokenFile)) } catch { throw fail("tokenFile", error.message) }
        let listenAddress = try listen.map { (text) throws(ConfigError) -> HostPort in
            guard let parsed = HostPort(text) else { throw fail("listen", "expected host:port") }
            return parsed
        }
        if (clientCertFile == nil) != (clientKeyFile == nil) {
            throw fail("clientCertFile", "set clientCertFile and clientKeyFile together")
        }
        if let clientCertFile, let clientKeyFile {
            try tlsFiles.keyPair(certificate: try readable(clientCertFile, "clientCertFile"), certificateField: "clientCertFile",
                                 key: try readable(clientKeyFile, "clientKeyFile"), keyField: "clientKeyFile")
        }
        let keep = keep ?? 5
        guard keep >= 2 else { throw fail("keep", "must be at least 2: Flux may still be reading the previous artifact") }
        if let journalMaxBytes, journalMaxBytes < 1 << 20 { throw fail("journalMaxBytes", "must be at least 1048576 (1 MiB)") }
        let fluxConfig = try ResolvedFluxConfig.resolve(flux, listen: listenAddress, fail: fail, absolute: absolute, tlsFiles: tlsFiles)
        return ResolvedAgentConfig(
            relay: relay, caFile: ca, token: token, tokenFile: absolute(tokenFile), dataDirectory: URL(fileURLWithPath: absolute(dataDir)),
            listen: listenAddress,
            clientCertificate: try clientCertFile.map { (path) throws(ConfigError) in try readable(path, "clientCertFile") },
            clientKey: try clientKeyFile.map { (path) throws(ConfigError) in try readable(path, "clientKeyFile") },
            reconnectInitial: reconnectInitial?.duration ?? .milliseconds(500),
            reconnectMax: reconnectMax?.duration ?? .seconds(30), keep: keep,
            keepReplacedFor: keepReplacedFor?.duration ?? .seconds(60), journalMaxBytes: journalMaxBytes ?? 32 << 20,
            flux: fluxConfig, httpLimits: try HTTPLimits.resolve(httpLimits, defaults: .agentDefaults, file: file))
    }
}

public struct ResolvedAgentConfig: Sendable {
    public var relay: HostPort
    public var caFile: String
    public var token: String
    /// Re-read for every call: a rotated token is picked up without a restart.
    public var tokenFile: String
    public var dataDirectory: URL
    public var listen: HostPort?
    public var clientCertificate: String?
    public var clientKey: String?
    public var reconnectInitial: Duration
    public var reconnectMax: Duration
    public var keep: Int
    public var keepReplacedFor: Duration
    public var journalMaxBytes: Int
    /// Flux integrations; nil when `listen` is not set.
    public var flux: ResolvedFluxConfig?
    public var httpLimits: HTTPLimits = .agentDefaults
}
