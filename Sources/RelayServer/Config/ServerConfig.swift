import ArtifactMirror
import Foundation
import RelayShared
import Provenance

/// `relay.yaml`: everything relay-server needs. Every field is documented in the README.
public struct ServerConfig: Sendable, Decodable {
    public struct TLS: Sendable, Decodable {
        public var certFile: String
        public var keyFile: String
        /// When set, agents must also present a client certificate signed by this CA.
        public var clientCAFile: String?
        /// With clientCAFile: the client certificate must name the agent whose token is used
        /// (subject CN or a DNS SAN equal to the agent's name).
        public var bindClientCertificate: Bool?
        /// Lowest TLS version accepted on the tunnel: "1.3" (default) or "1.2" (ECDHE + AEAD suites only).
        public var minVersion: String?
    }

    public struct SourceRef: Sendable, Decodable, Equatable {
        public var branch: String?
        public var tag: String?
        public var semver: String?
        public var commit: String?
        public var name: String?
    }

    public struct SourceAuth: Sendable, Decodable {
        public var username: String?
        public var passwordFile: String?
        public var tokenFile: String?
        public var sshKeyFile: String?
        public var knownHostsFile: String?
    }

    public struct Source: Sendable, Decodable {
        public var name: String
        /// A Git repository; or `helm` (a chart) or `oci` (an OCI artifact) instead.
        public var url: String?
        public var helm: HelmSettings?
        public var oci: OCISettings?
        public var ref: SourceRef?
        /// Polling fallback; webhooks trigger packaging at once.
        public var interval: ConfigDuration?
        public var auth: SourceAuth?
        /// Extra ignore patterns (like GitRepository `.spec.ignore`).
        public var ignore: String?
        /// Post Flux status to this GitLab project as commit statuses (and deployments).
        public var gitlab: GitLab?
        /// Waves a new revision goes through (default: every agent at once).
        public var rollout: Rollout?
    }

    public struct GitLab: Sendable, Decodable {
        /// e.g. https://gitlab.example.com
        public var url: String
        /// Numeric id or full path (group/project).
        public var project: String
        /// A token with the api scope (Developer role or more on the project).
        public var tokenFile: String
        /// Agents → GitLab environments: each delivery becomes a deployment there.
        public var environments: [Environment]?
        /// Also hold revisions during the project's own deploy freeze periods (Freeze Periods API).
        public var freezePeriods: Bool?
        /// How often the freeze periods are read again (default 5m).
        public var freezePeriodsInterval: ConfigDuration?
    }

    public struct Notifications: Sendable, Decodable {
        public struct Slack: Sendable, Decodable { public var webhookURLFile: String }
        public struct Webhook: Sendable, Decodable { public var url: String }
        public var slack: [Slack]?
        public var webhooks: [Webhook]?
    }

    public struct Agent: Sendable, Decodable {
        public var name: String
        public var tokenSHA256: String?
        public var tokenFile: String?
        public var sources: [String]
    }

    public struct Limits: Sendable, Decodable {
        public var maxChunkBytes: Int?
        public var maxArtifactBytes: UInt64?
        public var maxConcurrentFetches: Int?
        public var maxFetchStreams: Int?
        public var maxQueuedFetches: Int?
        public var maxMessageBytes: Int?
        public var heartbeatInterval: ConfigDuration?
        /// New tunnel sessions admitted a second; beyond, a refusal with a retry pushback.
        public var sessionsPerSecond: Int?
        /// Artifact bytes handed to connections and not yet sent, relay-wide.
        public var maxFetchBytesInFlight: Int?
        /// TLS handshakes in progress on the tunnel port; beyond, new connections are closed.
        public var maxPendingHandshakes: Int?
    }

    /// Tunnel address (TLS, gRPC over HTTP/2).
    public var listen: String
    /// Webhooks and health (later: API, page, metrics).
    public var http: String
    public var tls: TLS
    public var dataDir: String
    public var webhookToken: String?
    public var webhookTokenFile: String?
    public var sources: [Source]
    public var agents: [Agent]
    public var limits: Limits?
    /// Delay agents are told to wait before reconnecting when the relay drains (jittered).
    public var drainRetryAfter: ConfigDuration?
    /// On shutdown, send agents to this relay (host:port) instead of back here.
    public var drainRedirect: String?
    /// Who may read the status API, stream and page.
    public var readers: [Reader]?
    /// Who may also change things through the API (release a held revision); admins can read too.
    public var admins: [Reader]?
    /// Deploy freezes: new revisions are held for the agents they cover while they are open.
    public var freezes: [Freeze]?
    /// Grants reviewed in Git: the agents and their sources from a file in a Git source.
    public var access: AccessSettings?

    public struct AccessSettings: Sendable, Decodable {
        /// A Git source in `sources:` (agents need not be granted it).
        public var source: String
        /// The file in it (default relay-access.yaml).
        public var path: String?
    }
    /// Failure and recovery notifications.
    public var notifications: Notifications?
    /// The relay's page as people reach it (link in GitLab commit statuses).
    public var publicURL: String?
    /// Connection cap and timeouts of the `http` listener.
    public var httpLimits: HTTPLimits.Settings?
    /// How long status history is kept (`status.retention`).
    public var status: StatusSettings?
    /// The key that signs every artifact's manifest and every bundle (`signing.keyFile`).
    public var signing: SigningSettings?
    /// Where the registry lives (default: SQLite under dataDir; `postgres:` for replicas).
    public var database: DatabaseSettings?
    /// This process's name among replicas (status API `replica`); default `<hostname>:<listen port>`.
    public var replica: String?

    public struct SigningSettings: Sendable, Decodable {
        /// PEM ECDSA P-256 private key; default `<dataDir>/signing/relay.key`, created on first start.
        public var keyFile: String?
        /// Public keys of retired signing keys, still printed by `relay-server keys public`
        /// so agents keep accepting what they signed until the files are removed from here.
        public var previousPublicKeys: [String]?
    }

    public struct Reader: Sendable, Decodable {
        public var name: String
        public var tokenSHA256: String?
        public var tokenFile: String?
    }

    // `load(path:)` and `parse(yaml:baseDirectory:)` come with `ConfigFile`.
}

/// A validated configuration with absolute paths and parsed values.
public struct ResolvedServerConfig: Sendable {
    public struct Source: Sendable {
        public var name: String
        /// The Git repository; nil for a Helm chart or OCI artifact source (`upstream`).
        public var remote: RemoteLocation?
        /// Where a Helm chart or OCI artifact source comes from; nil for a Git source.
        public var upstream: Upstream?
        public var reference: GitReference?
        public var interval: Duration
        public var credentials: GitCredentials
        public var ignore: String?
        /// Branch names a GitLab push for this source may name (from `ref.branch`).
        public var branch: String?
        public var gitlab: GitLabTarget?
        /// Waves; nil: every granted agent gets a new revision at once.
        public var rollout: RolloutPolicy? = nil
    }

    public struct GitLabTarget: Sendable, Equatable {
        /// `<url>/api/v4/projects/<url-encoded project>`
        public var projectAPI: String
        public var token: String
        /// Agents → environments (deployments are recorded for the agents named here).
        public var environments: [EnvironmentRule] = []
        /// How often the project's freeze periods are read; nil: they are not.
        public var freezePeriodsInterval: Duration? = nil
    }

    public struct Notifications: Sendable {
        public var slack: [String] = []
        public var webhooks: [String] = []
    }

    public struct Agent: Sendable {
        public var name: String
        public var tokenSHA256: String
        public var sources: [String]
    }

    public struct Reader: Sendable {
        public var name: String
        public var tokenSHA256: String
    }

    public var listen: HostPort
    public var http: HostPort
    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String?
    /// `tls.bindClientCertificate`: a client certificate must name its agent.
    public var bindClientCertificate = false
    public var tlsMinimumVersion: TLSMinimumVersion = .tls13
    public var dataDirectory: URL
    public var webhookToken: String?
    public var sources: [Source]
    public var agents: [Agent]
    public var limits: TunnelLimits
    public var drainRetryAfter: Duration
    public var drainRedirect: HostPort?
    public var readers: [Reader] = []
    /// `admins:` (they may read too).
    public var admins: [Reader] = []
    /// `freezes:`.
    public var freezes: [FreezeRule] = []
    /// `access:`.
    public var access: AccessFileWatcher.Settings?
    public var notifications = Notifications()
    public var publicURL: String?
    public var httpLimits: HTTPLimits = .relayDefaults
    public var statusRetention = StatusRetention.Policy()
    /// The signing key's file (created on first start when it is the default and missing).
    public var signingKeyFile: String = ""
    /// Whether `signingKeyFile` is the default under dataDir (then the relay may create it).
    public var signingKeyIsDefault = true
    /// Retired keys' public halves (`signing.previousPublicKeys`).
    public var previousSigningKeys: [TrustedKey] = []
    /// `database.postgres`; nil: SQLite in `<dataDir>/relay.sqlite`.
    public var postgres: PostgresStore.Settings?
    /// This relay process among replicas: `replica`, or `<hostname>:<listen port>`.
    public var replica = ""
}

/// The tunnel's explicit limits (all configurable under `limits:`).
public struct TunnelLimits: Sendable, Equatable {
    public var maxChunkBytes: Int = 1 << 20
    public var maxArtifactBytes: UInt64 = 4 << 30
    public var maxConcurrentFetches: Int = 4
    /// Fetch bodies streaming at once, relay-wide: bytes in flight ≤ maxFetchStreams × maxChunkBytes.
    public var maxFetchStreams: Int = 32
    /// Fetches waiting (FIFO) for a stream slot; beyond, refused with a retry pushback.
    public var maxQueuedFetches: Int = 1024
    public var maxMessageBytes: Int = 4 << 20
    public var heartbeatInterval: Duration = .seconds(5)
    /// New sessions admitted a second (`SessionAdmission`); a graceful drain spreads the
    /// fleet's return over connected ÷ this.
    public var sessionsPerSecond: Int = 500
    /// TLS handshakes in progress at once (`HandshakeGate`).
    public var maxPendingHandshakes: Int = 1024
    /// Artifact bytes handed to connections and not yet taken by their sockets, relay-wide
    /// (`OutboundBytes`); Fetch bodies wait for room before reading a chunk. 10,000 agents
    /// fetching 1 MiB on this kind of machine: 64 MiB took 61 s with a relay peak of 1,629 MiB,
    /// 16 MiB 97 s and 1,449 MiB (Benchmarks/fleet_bench.py phase f).
    public var maxFetchBytesInFlight: Int = 16 << 20

    public init() {}
}

extension ServerConfig: ConfigFile {
    public static let fileName = "relay.yaml"

    public func resolve(file: String, base: URL) throws(ConfigError) -> ResolvedServerConfig {
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : base.appendingPathComponent(path).standardizedFileURL.path
        }
        func fail(_ field: String, _ message: String) -> ConfigError {
            ConfigError(file: file, field: field, message: message)
        }
        /// A secret read from a file; a failure names the field.
        func secret(_ path: String, _ field: String) throws(ConfigError) -> String {
            do { return try TokenHash.readToken(file: absolute(path)) } catch { throw fail(field, error.message) }
        }
        /// A token's SHA-256 from `tokenSHA256` (preferred) or a token file.
        func tokenHash(_ sha: String?, _ file: String?, _ field: String) throws(ConfigError) -> String {
            switch (sha, file) {
            case (let sha?, nil):
                let lower = sha.lowercased()
                guard lower.count == 64, lower.allSatisfy(\.isHexDigit) else {
                    throw fail("\(field).tokenSHA256", "expected 64 hex digits (sha256sum of the token)")
                }
                return lower
            case (nil, let tokenFile?):
                return TokenHash.sha256Hex(try secret(tokenFile, "\(field).tokenFile"))
            case (nil, nil):
                throw fail("\(field)", "set tokenSHA256 (preferred) or tokenFile")
            case (.some, .some):
                throw fail("\(field)", "set tokenSHA256 or tokenFile, not both")
            }
        }
        /// A valid, not yet used name for a source or agent.
        func checkName(_ name: String, _ field: String, _ kind: String, _ seen: inout Set<String>) throws(ConfigError) {
            guard Self.isValidName(name) else {
                throw fail("\(field).name", "'\(name)' must be 1-63 characters of a-z, 0-9, '-', '.', '_'")
            }
            guard seen.insert(name).inserted else { throw fail("\(field).name", "duplicate \(kind) '\(name)'") }
        }
        func readable(_ path: String, _ field: String) throws(ConfigError) -> String {
            let full = absolute(path)
            guard FileManager.default.isReadableFile(atPath: full) else { throw fail(field, "cannot read \(full)") }
            return full
        }

        guard let listen = HostPort(listen) else { throw fail("listen", "expected host:port, e.g. 127.0.0.1:8443") }
        guard let http = HostPort(http) else { throw fail("http", "expected host:port, e.g. 127.0.0.1:8080") }
        let cert = try readable(tls.certFile, "tls.certFile")
        let key = try readable(tls.keyFile, "tls.keyFile")
        let clientCA = try tls.clientCAFile.map { (path) throws(ConfigError) in try readable(path, "tls.clientCAFile") }
        let tlsFiles = TLSFileCheck(configFile: file)
        try tlsFiles.keyPair(certificate: cert, certificateField: "tls.certFile", key: key, keyField: "tls.keyFile")
        if let clientCA { try tlsFiles.certificates(clientCA, field: "tls.clientCAFile") }
        let bindClientCertificate = tls.bindClientCertificate ?? false
        if bindClientCertificate, clientCA == nil {
            throw fail("tls.bindClientCertificate", "needs tls.clientCAFile: without client certificates there is nothing to bind")
        }
        guard let tlsMinimumVersion = TLSMinimumVersion(configValue: tls.minVersion) else {
            throw fail("tls.minVersion", "'\(tls.minVersion ?? "")' is not \"1.3\" (the default) or \"1.2\"")
        }

        var webhook = webhookToken
        if let webhook, webhook.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw fail("webhookToken", "is empty: any request would match it. Set a long random token "
                       + "(`relay-server hash-token --generate` prints one) or remove the field to turn webhooks off")
        }
        if let webhookTokenFile {
            if webhook != nil { throw fail("webhookTokenFile", "set webhookToken or webhookTokenFile, not both") }
            webhook = try secret(webhookTokenFile, "webhookTokenFile")
        }

        var resolvedSources: [ResolvedServerConfig.Source] = []
        var names = Set<String>()
        for (index, source) in sources.enumerated() {
            let field = "sources[\(index)]"
            try checkName(source.name, field, "source", &names)
            let upstream = try source.upstream(field: field, fail: fail, secret: secret, readable: readable)
            var remote: RemoteLocation?
            if let url = source.url {
                do { remote = try RemoteLocation(url, relativeTo: base.path) } catch {
                    throw fail("\(field).url", error.description)
                }
            } else {
                for (set, name) in [(source.ref != nil, "ref"), (source.auth != nil, "auth"), (source.ignore != nil, "ignore"), (source.gitlab != nil, "gitlab")] where set {
                    throw fail("\(field).\(name)", "applies to Git sources (url) only; a helm or oci source has its own fields")
                }
            }
            let reference = try Self.reference(source.ref, field: "\(field).ref", fail: fail)
            var credentials = GitCredentials()
            if let auth = source.auth {
                credentials.username = auth.username
                if let passwordFile = auth.passwordFile {
                    credentials.password = try secret(passwordFile, "\(field).auth.passwordFile")
                }
                if let tokenFile = auth.tokenFile {
                    credentials.password = try secret(tokenFile, "\(field).auth.tokenFile")
                    if credentials.username == nil { credentials.username = "oauth2" }
                }
                if let sshKeyFile = auth.sshKeyFile { credentials.sshPrivateKey = try readable(sshKeyFile, "\(field).auth.sshKeyFile") }
                if let knownHosts = auth.knownHostsFile { credentials.knownHosts = try readable(knownHosts, "\(field).auth.knownHostsFile") }
            }
            let interval = source.interval?.duration ?? .seconds(60)
            guard interval >= .seconds(1) else { throw fail("\(field).interval", "must be at least 1s") }
            var gitlab: ResolvedServerConfig.GitLabTarget?
            if let target = source.gitlab {
                guard let url = URLComponents(string: target.url), url.scheme == "https" || url.scheme == "http", url.host != nil else {
                    throw fail("\(field).gitlab.url", "expected the GitLab base URL, e.g. https://gitlab.example.com")
                }
                guard !target.project.isEmpty, !target.project.hasPrefix("/"), !target.project.hasSuffix("/") else {
                    throw fail("\(field).gitlab.project", "expected a project id or its full path, e.g. group/podinfo")
                }
                let encoded = target.project.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? target.project
                let base = target.url.hasSuffix("/") ? String(target.url.dropLast()) : target.url
                gitlab = .init(projectAPI: "\(base)/api/v4/projects/\(encoded)", token: try secret(target.tokenFile, "\(field).gitlab.tokenFile"),
                               environments: try source.resolveEnvironments(field: field, fail: fail))
                if target.freezePeriods == true {
                    let every = target.freezePeriodsInterval?.duration ?? .seconds(300)
                    guard every >= .seconds(1) else { throw fail("\(field).gitlab.freezePeriodsInterval", "must be at least 1s") }
                    gitlab?.freezePeriodsInterval = every
                } else if target.freezePeriodsInterval != nil {
                    throw fail("\(field).gitlab.freezePeriodsInterval", "applies with freezePeriods: true only")
                }
            }
            resolvedSources.append(.init(name: source.name, remote: remote, upstream: upstream, reference: reference, interval: interval,
                                         credentials: credentials, ignore: source.ignore, branch: source.ref?.branch, gitlab: gitlab,
                                         rollout: try source.resolveRollout(field: field, fail: fail)))
        }

        var resolvedAgents: [ResolvedServerConfig.Agent] = []
        var agentNames = Set<String>()
        for (index, agent) in agents.enumerated() {
            let field = "agents[\(index)]"
            try checkName(agent.name, field, "agent", &agentNames)
            let hash = try tokenHash(agent.tokenSHA256, agent.tokenFile, field)
            for (sourceIndex, name) in agent.sources.enumerated() where !names.contains(name) {
                throw fail("\(field).sources[\(sourceIndex)]", "unknown source '\(name)'")
            }
            resolvedAgents.append(.init(name: agent.name, tokenSHA256: hash, sources: agent.sources))
        }
        var resolvedReaders: [ResolvedServerConfig.Reader] = []
        var readerNames = Set<String>()
        for (index, reader) in (readers ?? []).enumerated() {
            let field = "readers[\(index)]"
            try checkName(reader.name, field, "reader", &readerNames)
            resolvedReaders.append(.init(name: reader.name, tokenSHA256: try tokenHash(reader.tokenSHA256, reader.tokenFile, field)))
        }
        var resolvedAdmins: [ResolvedServerConfig.Reader] = []
        for (index, admin) in (admins ?? []).enumerated() {
            let field = "admins[\(index)]"
            try checkName(admin.name, field, "admin", &readerNames)
            resolvedAdmins.append(.init(name: admin.name, tokenSHA256: try tokenHash(admin.tokenSHA256, admin.tokenFile, field)))
        }
        var resolvedNotifications = ResolvedServerConfig.Notifications()
        for (index, slack) in (notifications?.slack ?? []).enumerated() {
            let url = try secret(slack.webhookURLFile, "notifications.slack[\(index)].webhookURLFile")
            guard let parsed = URLComponents(string: url), parsed.scheme == "https" || parsed.scheme == "http", parsed.host != nil else {
                throw fail("notifications.slack[\(index)].webhookURLFile", "the file must hold the incoming webhook URL")
            }
            resolvedNotifications.slack.append(url)
        }
        for (index, hook) in (notifications?.webhooks ?? []).enumerated() {
            guard let parsed = URLComponents(string: hook.url), parsed.scheme == "https" || parsed.scheme == "http", parsed.host != nil else {
                throw fail("notifications.webhooks[\(index)].url", "expected an http(s) URL")
            }
            resolvedNotifications.webhooks.append(hook.url)
        }
        if let publicURL, URLComponents(string: publicURL)?.host == nil { throw fail("publicURL", "expected an http(s) URL") }
        let redirect = try drainRedirect.map { (text) throws(ConfigError) -> HostPort in
            guard let parsed = HostPort(text), parsed.port > 0 else { throw fail("drainRedirect", "expected host:port of another relay's tunnel") }
            return parsed
        }
        let hashes = resolvedAgents.map(\.tokenSHA256)
        if Set(hashes).count != hashes.count { throw fail("agents", "two agents share one token; give each its own") }

        var resolvedLimits = TunnelLimits()
        if let limits {
            if let value = limits.maxChunkBytes {
                guard (4096...(16 << 20)).contains(value) else { throw fail("limits.maxChunkBytes", "must be 4096…16777216") }
                resolvedLimits.maxChunkBytes = value
            }
            if let value = limits.maxArtifactBytes { resolvedLimits.maxArtifactBytes = value }
            if let value = limits.maxConcurrentFetches {
                guard (1...64).contains(value) else { throw fail("limits.maxConcurrentFetches", "must be 1…64") }
                resolvedLimits.maxConcurrentFetches = value
            }
            if let value = limits.maxFetchStreams {
                guard (1...4096).contains(value) else { throw fail("limits.maxFetchStreams", "must be 1…4096") }
                resolvedLimits.maxFetchStreams = value
            }
            if let value = limits.maxQueuedFetches {
                guard (0...1_000_000).contains(value) else { throw fail("limits.maxQueuedFetches", "must be 0…1000000") }
                resolvedLimits.maxQueuedFetches = value
            }
            if let value = limits.maxMessageBytes {
                guard value >= resolvedLimits.maxChunkBytes + 4096 else {
                    throw fail("limits.maxMessageBytes", "must exceed maxChunkBytes by at least 4096")
                }
                resolvedLimits.maxMessageBytes = value
            }
            if let value = limits.heartbeatInterval?.duration {
                guard value >= .milliseconds(100) else { throw fail("limits.heartbeatInterval", "must be at least 100ms") }
                resolvedLimits.heartbeatInterval = value
            }
            if let value = limits.sessionsPerSecond {
                guard (1...100_000).contains(value) else { throw fail("limits.sessionsPerSecond", "must be 1…100000") }
                resolvedLimits.sessionsPerSecond = value
            }
            if let value = limits.maxFetchBytesInFlight {
                guard (1 << 20...(64 << 30)).contains(value) else { throw fail("limits.maxFetchBytesInFlight", "must be 1 MiB … 64 GiB (bytes)") }
                resolvedLimits.maxFetchBytesInFlight = value
            }
            if let value = limits.maxPendingHandshakes {
                guard (1...100_000).contains(value) else { throw fail("limits.maxPendingHandshakes", "must be 1…100000") }
                resolvedLimits.maxPendingHandshakes = value
            }
        }
        if resolvedLimits.maxMessageBytes < resolvedLimits.maxChunkBytes + 4096 {
            resolvedLimits.maxMessageBytes = resolvedLimits.maxChunkBytes + 4096
        }

        if let keyFile = signing?.keyFile {
            let path = try readable(keyFile, "signing.keyFile")
            do { _ = try SigningKey.load(path: path) } catch { throw fail("signing.keyFile", error.description) }
        }
        if let replica, replica.trimmingCharacters(in: .whitespaces).isEmpty || replica.count > 253 || replica.contains(where: \.isNewline) {
            throw fail("replica", "must be a name of 1…253 characters (this process among replicas), or left out (<hostname>:<listen port>)")
        }
        func previousKeys() throws(ConfigError) -> [TrustedKey] {
            var keys: [TrustedKey] = []
            for (index, file) in (signing?.previousPublicKeys ?? []).enumerated() {
                let field = "signing.previousPublicKeys[\(index)]"
                do { keys += try TrustedKey.load(path: try readable(file, field)) } catch let error as KeyError {
                    throw fail(field, error.description)
                } catch let error as ConfigError { throw error } catch { throw fail(field, "\(error)") }
            }
            return keys
        }

        return ResolvedServerConfig(
            listen: listen, http: http, certificateFile: cert, keyFile: key, clientCAFile: clientCA,
            bindClientCertificate: bindClientCertificate, tlsMinimumVersion: tlsMinimumVersion,
            dataDirectory: URL(fileURLWithPath: absolute(dataDir)), webhookToken: webhook,
            sources: resolvedSources, agents: resolvedAgents, limits: resolvedLimits,
            drainRetryAfter: drainRetryAfter?.duration ?? .seconds(2), drainRedirect: redirect, readers: resolvedReaders,
            admins: resolvedAdmins, freezes: try resolveFreezes(fail: fail), access: try resolveAccess(resolvedSources, fail: fail),
            notifications: resolvedNotifications, publicURL: publicURL,
            httpLimits: try HTTPLimits.resolve(httpLimits, defaults: .relayDefaults, file: file),
            statusRetention: try StatusRetention.Policy.resolve(status?.retention, fail: fail),
            signingKeyFile: signing?.keyFile.map(absolute) ?? URL(fileURLWithPath: absolute(dataDir)).appendingPathComponent("signing/relay.key").path,
            signingKeyIsDefault: signing?.keyFile == nil,
            previousSigningKeys: try previousKeys(),
            postgres: try (database ?? DatabaseSettings()).resolve(fail: fail, secret: secret, readable: readable),
            replica: replica ?? "\(ProcessInfo.processInfo.hostName):\(listen.port)")
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "-._".contains($0)) }
    }

    static func reference(_ ref: SourceRef?, field: String,
                          fail: (String, String) -> ConfigError) throws(ConfigError) -> GitReference? {
        guard let ref else { return nil }
        if let commit = ref.commit {
            if ref.tag != nil || ref.semver != nil || ref.name != nil { throw fail(field, "commit combines only with branch") }
            return .commit(commit.lowercased(), branch: ref.branch)
        }
        let set = [ref.branch.map { GitReference.branch($0) }, ref.tag.map { .tag($0) },
                   ref.semver.map { .semver($0) }, ref.name.map { .name($0) }].compactMap { $0 }
        guard set.count <= 1 else { throw fail(field, "set one of branch, tag, semver, commit, name") }
        return set.first
    }
}
