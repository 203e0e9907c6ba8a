import Foundation
import Provenance
import RelayShared

/// `agent.yaml`. Every field is documented in the README.
public struct AgentConfig: Sendable, ConfigFile {
    /// The agent's name at the relay. Required without `relay` (bundles name their agent);
    /// online, the relay's Welcome must name the same agent when it is set.
    public var name: String?
    /// The relay's tunnel address, host:port. Without it the agent is offline: it takes
    /// artifacts only from bundles (`relay-agent import`, `import.inboxDir`).
    public var relay: String?
    /// Several relay replicas sharing one database, host:port each (instead of `relay`): the
    /// agent starts at one of them (its own pick, so a fleet spreads) and moves to the next
    /// when a session fails or a relay drains without naming another.
    public var relays: [String]?
    /// CA bundle (PEM) that signed the relay's certificate (with `relay`).
    public var caFile: String?
    /// The agent's bearer token (with `relay`).
    public var tokenFile: String?
    public var dataDir: String
    /// Relay signing keys the agent accepts; when set, nothing unsigned is published.
    public var trust: TrustSettings?
    /// Offline bundles: the watched inbox.
    public var importSettings: ImportSettings?
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

    public struct TrustSettings: Sendable, Decodable {
        /// PEM public keys (`relay-server keys public`), one or more per file.
        public var relayPublicKeys: [String]
    }

    public struct ImportSettings: Sendable, Decodable {
        /// Bundles dropped here are imported by the running agent (default `<dataDir>/inbox`).
        public var inboxDir: String?
    }

    enum CodingKeys: String, CodingKey {
        case name, relay, relays, caFile, tokenFile, dataDir, trust, listen, flux, clientCertFile, clientKeyFile
        case reconnectInitial, reconnectMax, keep, keepReplacedFor, journalMaxBytes, httpLimits
        case importSettings = "import"
    }

    // `load(path:)` and `parse(yaml:baseDirectory:)` come with `ConfigFile`.
    public static let fileName = "agent.yaml"

    /// `relay`, or `relays`, as addresses; nil when neither is set (offline).
    private func relayAddresses(fail: (String, String) -> ConfigError) throws(ConfigError) -> [HostPort]? {
        let example = "expected host:port, e.g. relay.example.com:8443"
        switch (relay, relays) {
        case (nil, nil):
            return nil
        case (_?, _?):
            throw fail("relays", "set relay (one relay) or relays (replicas), not both")
        case (let text?, nil):
            guard let address = HostPort(text), address.port > 0 else { throw fail("relay", example) }
            return [address]
        case (nil, let texts?):
            guard !texts.isEmpty else { throw fail("relays", "list at least one host:port, or use relay") }
            var addresses: [HostPort] = []
            for (index, text) in texts.enumerated() {
                guard let address = HostPort(text), address.port > 0 else { throw fail("relays[\(index)]", example) }
                guard !addresses.contains(address) else { throw fail("relays[\(index)]", "\(text) is listed twice") }
                addresses.append(address)
            }
            return addresses
        }
    }

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
        if let name, !AgentName.isValid(name) { throw fail("name", AgentName.rule) }
        let tlsFiles = TLSFileCheck(configFile: file)
        var link: RelayLink?
        if let addresses = try relayAddresses(fail: fail) {
            let field = relays == nil ? "relay" : "relays"
            guard let caFile else { throw fail("caFile", "required with \(field): the CA (PEM) that signed the relay's certificate") }
            guard let tokenFile else { throw fail("tokenFile", "required with \(field): the file holding the agent's token") }
            let ca = try readable(caFile, "caFile")
            try tlsFiles.certificates(ca, field: "caFile")
            let token: String
            do { token = try TokenHash.readToken(file: absolute(tokenFile)) } catch { throw fail("tokenFile", error.message) }
            link = RelayLink(relays: addresses, caFile: ca, token: token, tokenFile: absolute(tokenFile))
        } else {
            guard name != nil else {
                throw fail("name", "required when relay is not set: an offline agent imports only bundles made for its name")
            }
            for (field, value) in [("caFile", caFile), ("tokenFile", tokenFile), ("clientCertFile", clientCertFile)] where value != nil {
                throw fail(field, "only used with relay; remove it, or set relay")
            }
        }
        var trustedKeys: [TrustedKey]?
        if let trust {
            guard !trust.relayPublicKeys.isEmpty else {
                throw fail("trust.relayPublicKeys", "list at least one PEM public key file (relay-server keys public), or remove trust")
            }
            var keys: [TrustedKey] = []
            for (index, path) in trust.relayPublicKeys.enumerated() {
                let field = "trust.relayPublicKeys[\(index)]"
                do { keys += try TrustedKey.load(path: try readable(path, field)) } catch let error as KeyError {
                    throw fail(field, error.description)
                } catch let error as ConfigError { throw error } catch { throw fail(field, "\(error)") }
            }
            trustedKeys = keys
        }
        let listenAddress = try listen.map { (text) throws(ConfigError) -> HostPort in
            guard let parsed = HostPort(text) else { throw fail("listen", "expected host:port") }
            return parsed
        }
        if (clientCertFile == nil) != (clientKeyFile == nil) {
            throw fail("clientCertFile", "set clientCertFile and clientKeyFile together")
        }
        if let clientCertFile, let clientKeyFile, link != nil {
            try tlsFiles.keyPair(certificate: try readable(clientCertFile, "clientCertFile"), certificateField: "clientCertFile",
                                 key: try readable(clientKeyFile, "clientKeyFile"), keyField: "clientKeyFile")
        }
        let keep = keep ?? 5
        guard keep >= 2 else { throw fail("keep", "must be at least 2: Flux may still be reading the previous artifact") }
        if let journalMaxBytes, journalMaxBytes < 1 << 20 { throw fail("journalMaxBytes", "must be at least 1048576 (1 MiB)") }
        let fluxConfig = try ResolvedFluxConfig.resolve(flux, listen: listenAddress, fail: fail, absolute: absolute, tlsFiles: tlsFiles)
        if link != nil {
            link?.clientCertificate = try clientCertFile.map { (path) throws(ConfigError) in try readable(path, "clientCertFile") }
            link?.clientKey = try clientKeyFile.map { (path) throws(ConfigError) in try readable(path, "clientKeyFile") }
        }
        let dataDirectory = URL(fileURLWithPath: absolute(dataDir))
        return ResolvedAgentConfig(
            name: name, link: link, dataDirectory: dataDirectory,
            listen: listenAddress,
            trustedRelayKeys: trustedKeys.map(TrustedKeys.init),
            inboxDirectory: importSettings?.inboxDir.map { URL(fileURLWithPath: absolute($0)) } ?? dataDirectory.appendingPathComponent("inbox"),
            reconnectInitial: reconnectInitial?.duration ?? .milliseconds(500),
            reconnectMax: reconnectMax?.duration ?? .seconds(30), keep: keep,
            keepReplacedFor: keepReplacedFor?.duration ?? .seconds(60), journalMaxBytes: journalMaxBytes ?? 32 << 20,
            flux: fluxConfig, httpLimits: try HTTPLimits.resolve(httpLimits, defaults: .agentDefaults, file: file))
    }
}

/// How an online agent reaches its relay.
public struct RelayLink: Sendable {
    /// `relay`, or the replicas of `relays` in their configured order (never empty).
    public var relays: [HostPort]
    /// The first relay (`relay`): where a one-off command such as `relay-agent fetch` dials.
    public var relay: HostPort { relays[0] }
    public var caFile: String
    public var token: String
    /// Re-read for every call: a rotated token is picked up without a restart.
    public var tokenFile: String
    public var clientCertificate: String?
    public var clientKey: String?
}

/// Agent names as the relay allows them.
public enum AgentName {
    public static let rule = "1-63 characters of a-z, 0-9, '-', '.', '_'"
    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "-._".contains($0)) }
    }
}

public struct ResolvedAgentConfig: Sendable {
    /// The agent's name (`name`); online, the relay's Welcome tells it when unset.
    public var name: String?
    /// Nil for an offline agent (no `relay`): bundles only.
    public var link: RelayLink?
    public var dataDirectory: URL
    public var listen: HostPort?
    /// With `trust`: the relay keys whose signature every published artifact must carry.
    public var trustedRelayKeys: TrustedKeys?
    /// Watched for bundles by the running agent.
    public var inboxDirectory: URL
    /// Where the CLIs hand requests to the running agent (private: never the inbox).
    public var requestDirectory: URL { dataDirectory.appendingPathComponent("requests") }
    // The link's parts (meaningful only with a link: the tunnel runs only then).
    public var relay: HostPort { link?.relay ?? HostPort(host: "127.0.0.1", port: 0) }
    /// Every configured relay (`relays`, or just `relay`); empty offline.
    public var relays: [HostPort] { link?.relays ?? [] }
    public var caFile: String { link?.caFile ?? "" }
    public var token: String { link?.token ?? "" }
    public var tokenFile: String { link?.tokenFile ?? "" }
    public var clientCertificate: String? { link?.clientCertificate }
    public var clientKey: String? { link?.clientKey }
    public var reconnectInitial: Duration
    public var reconnectMax: Duration
    public var keep: Int
    public var keepReplacedFor: Duration
    public var journalMaxBytes: Int
    /// Flux integrations; nil when `listen` is not set.
    public var flux: ResolvedFluxConfig?
    public var httpLimits: HTTPLimits = .agentDefaults
}
