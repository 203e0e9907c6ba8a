import Foundation
import RelayShared

/// `flux:` in agent.yaml: which Flux integrations are on. Every field is in the README.
public struct FluxConfig: Sendable, Decodable {
    /// How Flux reaches `listen` (e.g. `http://relay-agent.flux-system.svc.cluster.local.:9090`).
    /// Default: `http://<listen>`.
    public var url: String?
    public var oci: OCI?
    public var externalArtifacts: ExternalArtifacts?
    public var reconcile: Reconcile?
    public var kubernetes: Kubernetes?
    /// notification-controller events at POST /flux/events.
    public var events: Events?
    /// Watch Flux objects and report their status to the relay.
    public var status: Status?
    /// Serve `listen` over HTTPS (PEM files).
    public var tls: TLS?

    public struct TLS: Sendable, Decodable {
        public var certFile: String
        public var keyFile: String
        /// Lowest TLS version accepted: "1.3" (default) or "1.2" (ECDHE + AEAD suites only).
        public var minVersion: String?
    }

    public struct Status: Sendable, Decodable {
        public var watch: Bool?
        /// Where to watch (default: all namespaces).
        public var namespaces: [String]?
    }

    public struct Events: Sendable, Decodable {
        /// The token of a `generic-hmac` Provider: events must carry its X-Signature.
        public var hmacTokenFile: String?
    }

    public struct OCI: Sendable, Decodable {
        public var enabled: Bool?
        /// Repositories are `<prefix>/<source>` when set.
        public var repositoryPrefix: String?
        public var auth: Auth?
    }

    public struct Auth: Sendable, Decodable {
        public var type: PullAuth.Mode
        public var username: String
        public var passwordFile: String
        /// Bearer tokens live this long (default 5m).
        public var tokenLifetime: ConfigDuration?
    }

    public struct ExternalArtifacts: Sendable, Decodable {
        public var enabled: Bool?
        public var namespace: String?
        /// Source name → ExternalArtifact name.
        public var names: [String: String]?
    }

    public struct Reconcile: Sendable, Decodable {
        /// Patch `reconcile.fluxcd.io/requestedAt` on OCIRepositories that point here.
        public var ociRepositories: Bool?
        /// Where to look for them (default: all namespaces).
        public var namespaces: [String]?
        /// Other host[:port] names under which OCIRepositories reach this agent.
        public var hostAliases: [String]?
        /// notification-controller Receiver webhook URLs to POST after each publication.
        public var receivers: [Receiver]?
    }

    public struct Receiver: Sendable, Decodable {
        public var url: String
        /// Token of a `generic-hmac` Receiver (signs the body); omit for `generic`.
        public var hmacTokenFile: String?
    }

    public struct Kubernetes: Sendable, Decodable {
        /// A kubeconfig file (development); default: the in-cluster service account.
        public var kubeconfig: String?
        public var context: String?
        /// Service-account directory for the in-cluster configuration (default: the standard mount).
        public var serviceAccountDir: String?
    }
}

/// The Flux integrations, validated.
public struct ResolvedFluxConfig: Sendable {
    public var url: String
    public var ociEnabled: Bool
    public var repositoryPrefix: String?
    public var pullAuth: PullAuth?
    public var externalArtifacts: (namespace: String, names: [String: String])?
    public var reconcileOCIRepositories: Bool
    public var reconcileNamespaces: [String]?
    /// host[:port] (lowercase) under which Flux reaches this agent.
    public var hosts: Set<String>
    public var receivers: [ReceiverCaller.Target]
    public var kubernetes: FluxConfig.Kubernetes?
    public var eventsHMACKey: String?
    public var watchStatus: Bool = false
    public var tls: (certificateFile: String, keyFile: String)?
    public var tlsMinimumVersion: TLSMinimumVersion = .tls13
    public var statusNamespaces: [String]?

    /// Whether anything needs the Kubernetes API.
    public var needsKubernetes: Bool { externalArtifacts != nil || reconcileOCIRepositories || watchStatus }

    /// A DNS-1123 subdomain: dot-separated labels of [a-z0-9-], each starting and ending alphanumeric.
    static func isDNS1123(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 253 && name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            guard let first = label.first, let last = label.last else { return false }
            func alnum(_ c: Character) -> Bool { c.isASCII && (c.isLowercase || c.isNumber) }
            return alnum(first) && alnum(last) && label.allSatisfy { alnum($0) || $0 == "-" }
        }
    }

    static func resolve(_ flux: FluxConfig?, listen: HostPort?, fail: (String, String) -> ConfigError,
                        absolute: (String) -> String, tlsFiles: TLSFileCheck) throws(ConfigError) -> ResolvedFluxConfig? {
        guard let listen else {
            if flux != nil { throw fail("listen", "flux integrations need `listen`: the address Flux fetches artifacts from") }
            return nil
        }
        let flux = flux ?? FluxConfig()
        // Default: the listen address itself (a wildcard address means this host's loopback).
        let reachable = listen.host == "0.0.0.0" || listen.host == "::" ? HostPort(host: "127.0.0.1", port: listen.port) : listen
        var tlsPair: (String, String)?
        if let tls = flux.tls {
            for (field, path) in [("flux.tls.certFile", tls.certFile), ("flux.tls.keyFile", tls.keyFile)]
                where !FileManager.default.isReadableFile(atPath: absolute(path)) {
                throw fail(field, "cannot read \(absolute(path))")
            }
            try tlsFiles.keyPair(certificate: absolute(tls.certFile), certificateField: "flux.tls.certFile",
                                 key: absolute(tls.keyFile), keyField: "flux.tls.keyFile")
            tlsPair = (absolute(tls.certFile), absolute(tls.keyFile))
        }
        guard let tlsMinimumVersion = TLSMinimumVersion(configValue: flux.tls?.minVersion) else {
            throw fail("flux.tls.minVersion", "'\(flux.tls?.minVersion ?? "")' is not \"1.3\" (the default) or \"1.2\"")
        }
        let url = flux.url ?? "\(tlsPair == nil ? "http" : "https")://\(reachable.description)"
        guard let parsed = URLComponents(string: url), parsed.scheme == "http" || parsed.scheme == "https",
              let host = parsed.host, !host.isEmpty, parsed.query == nil else {
            throw fail("flux.url", "expected http(s)://host[:port], the address Flux uses to reach `listen`")
        }
        var hosts: Set<String> = [parsed.port.map { "\(host):\($0)" } ?? host]
        var resolved = ResolvedFluxConfig(
            url: url, ociEnabled: flux.oci?.enabled ?? true, repositoryPrefix: nil, pullAuth: nil, externalArtifacts: nil,
            reconcileOCIRepositories: flux.reconcile?.ociRepositories ?? false, reconcileNamespaces: flux.reconcile?.namespaces,
            hosts: [], receivers: [], kubernetes: flux.kubernetes)
        if let prefix = flux.oci?.repositoryPrefix, !prefix.isEmpty {
            guard OCINames.isRepository(prefix) else { throw fail("flux.oci.repositoryPrefix", "'\(prefix)' is not a valid OCI repository path") }
            resolved.repositoryPrefix = prefix
        }
        if let auth = flux.oci?.auth {
            let password: String
            do { password = try TokenHash.readToken(file: absolute(auth.passwordFile)) } catch { throw fail("flux.oci.auth.passwordFile", error.message) }
            guard !auth.username.isEmpty, !auth.username.contains(":") else { throw fail("flux.oci.auth.username", "must be non-empty, without ':'") }
            resolved.pullAuth = PullAuth(mode: auth.type, username: auth.username, password: password,
                                         tokenLifetime: Double(auth.tokenLifetime?.milliseconds ?? 300_000) / 1000)
        }
        if let ea = flux.externalArtifacts, ea.enabled ?? true {
            let namespace = ea.namespace ?? "flux-system"
            guard isDNS1123(namespace), namespace.count <= 63, !namespace.contains(".") else { throw fail("flux.externalArtifacts.namespace", "'\(namespace)' is not a valid namespace") }
            for (source, name) in ea.names ?? [:] where !isDNS1123(name) {
                throw fail("flux.externalArtifacts.names.\(source)", "'\(name)' is not a valid object name (DNS-1123 subdomain)")
            }
            resolved.externalArtifacts = (namespace, ea.names ?? [:])
        }
        for (index, alias) in (flux.reconcile?.hostAliases ?? []).enumerated() {
            guard !alias.isEmpty, !alias.contains("/") else { throw fail("flux.reconcile.hostAliases[\(index)]", "expected host[:port]") }
            hosts.insert(alias.lowercased())
        }
        resolved.hosts = hosts
        for (index, receiver) in (flux.reconcile?.receivers ?? []).enumerated() {
            guard let components = URLComponents(string: receiver.url), components.scheme == "http" || components.scheme == "https",
                  components.host != nil else { throw fail("flux.reconcile.receivers[\(index)].url", "expected an http(s) URL") }
            var key: String?
            if let file = receiver.hmacTokenFile {
                do { key = try TokenHash.readToken(file: absolute(file)) } catch { throw fail("flux.reconcile.receivers[\(index)].hmacTokenFile", error.message) }
            }
            resolved.receivers.append(.init(url: receiver.url, hmacKey: key))
        }
        if let kubeconfig = flux.kubernetes?.kubeconfig {
            guard FileManager.default.isReadableFile(atPath: absolute(kubeconfig)) else { throw fail("flux.kubernetes.kubeconfig", "cannot read \(absolute(kubeconfig))") }
            resolved.kubernetes?.kubeconfig = absolute(kubeconfig)
        }
        resolved.tls = tlsPair
        resolved.tlsMinimumVersion = tlsMinimumVersion
        resolved.watchStatus = flux.status?.watch ?? false
        resolved.statusNamespaces = flux.status?.namespaces
        if let file = flux.events?.hmacTokenFile {
            do { resolved.eventsHMACKey = try TokenHash.readToken(file: absolute(file)) } catch { throw fail("flux.events.hmacTokenFile", error.message) }
        }
        if let dir = flux.kubernetes?.serviceAccountDir { resolved.kubernetes?.serviceAccountDir = absolute(dir) }
        return resolved
    }
}
