import ArtifactMirror
import AsyncHTTPClient
import Logging
import NIOPosix
import ServiceLifecycle

/// Everything between the store and Flux, built from `flux:` in agent.yaml: the catalog and
/// HTTP endpoint, and the notifier that updates ExternalArtifacts and wakes OCIRepositories.
public final class FluxIntegration: Sendable {
    public let config: ResolvedFluxConfig
    public let catalog: CatalogHolder
    public let endpoint: FluxEndpoint
    public let notifier: FluxNotifier
    /// Follows Flux objects and journals their status (flux.status.watch).
    public let watcher: FluxStatusWatcher?
    let kube: KubeClient?
    let http: HTTPClient?
    let logger: Logger

    public init(config: ResolvedFluxConfig, store: ArtifactStore, journal: StatusJournal, logger: Logger,
                quarantine: ArtifactQuarantine? = nil, signatures: SignatureStore? = nil,
                trusted: RelaySignatureCheck? = nil) throws {
        self.config = config
        self.logger = logger
        catalog = CatalogHolder(store: store, repositoryPrefix: config.repositoryPrefix, signatures: signatures, trusted: trusted)
        var options = FluxEndpoint.Options(oci: config.ociEnabled, artifacts: true, pullAuth: config.pullAuth)
        options.events = FluxEventReceiver(journal: journal, hmacKey: config.eventsHMACKey)
        options.tls = config.tls
        options.tlsMinimumVersion = config.tlsMinimumVersion
        options.quarantine = quarantine
        endpoint = FluxEndpoint(catalog: catalog, options: options, logger: logger)
        var kube: KubeClient?
        if config.needsKubernetes {
            let connection: KubeConnection
            if let kubeconfig = config.kubernetes?.kubeconfig {
                connection = try KubeConnection.kubeconfig(path: kubeconfig, context: config.kubernetes?.context)
            } else {
                connection = try KubeConnection.inCluster(serviceAccountDirectory: config.kubernetes?.serviceAccountDir ?? KubeConnection.serviceAccountDirectory)
            }
            kube = try KubeClient(connection: connection, logger: logger)
            logger.info("Kubernetes API", metadata: ["server": "\(connection.server)", "via": "\(connection.origin)"])
        }
        self.kube = kube
        let http = config.receivers.isEmpty ? nil : HTTPClient(eventLoopGroupProvider: .singleton)
        self.http = http
        notifier = FluxNotifier(
            externalArtifacts: config.externalArtifacts.flatMap { ea in
                kube.map { ExternalArtifactWriter(client: $0, namespace: ea.namespace, baseURL: config.url, names: ea.names) }
            },
            nudger: config.reconcileOCIRepositories && config.ociEnabled
                ? kube.map { OCIRepositoryNudger(client: $0, hosts: config.hosts, namespaces: config.reconcileNamespaces, repositoryPrefix: config.repositoryPrefix) }
                : nil,
            receivers: http.map { ReceiverCaller(targets: config.receivers, http: $0) },
            logger: logger)
        if config.watchStatus, let kube {
            let resolver = SourceResolver(config: config, catalog: catalog)
            watcher = FluxStatusWatcher(client: kube, journal: journal, namespaces: config.statusNamespaces, logger: logger) {
                resolver.source(kind: $0, object: $1, ociURLs: $2)
            }
        } else {
            watcher = nil
        }
    }

    /// Watches Flux objects until cancelled (nothing when status watching is off).
    func watchStatus() async {
        await watcher?.run()
    }

    /// Keeps the catalog current and tells Flux about each publication, until cancelled.
    /// Reads the store first, and brings every source's Flux objects up to date.
    func follow(_ publications: AsyncStream<ArtifactRecord>) async {
        await reloadCatalog()
        for record in catalog.catalog.current.values { await notifier.submit(record) }
        for await record in publications {
            // The catalog first: Flux, once woken, must find the new tag.
            await reloadCatalog()
            await notifier.submit(record)
            do { try watcher?.refreshSources() } catch { logger.error("cannot journal status", metadata: ["error": "\(error)"]) }
        }
        await notifier.stop()
    }

    /// Re-reads the store (index files, signature files and their checks) on the thread pool:
    /// file work stays off the cooperative threads that serve Flux.
    private func reloadCatalog() async {
        do {
            try await NIOThreadPool.singleton.runIfActive { [catalog] in try catalog.reload() }
        } catch {
            logger.error("cannot read the store index", metadata: ["error": "\(error)"])
        }
    }

    func shutdown() async {
        await kube?.shutdown()
        try? await http?.shutdown()
    }
}

/// Which relay source a Flux object consumes: a Kustomization or HelmRelease through its
/// sourceRef/chartRef, an OCIRepository through its URL, an ExternalArtifact by its name.
struct SourceResolver: Sendable {
    let config: ResolvedFluxConfig
    let catalog: CatalogHolder

    func source(kind: String, object: FluxObject, ociURLs: [String: String]) -> String {
        let sources = Array(catalog.catalog.current.keys)
        let namespace = object.metadata.namespace ?? ""
        switch kind {
        case "Kustomization", "HelmRelease":
            guard let reference = kind == "Kustomization" ? object.spec?.sourceRef : object.spec?.chartRef,
                  let name = reference.name else { return "" }
            let referenceNamespace = reference.namespace ?? namespace
            switch reference.kind {
            case "ExternalArtifact": return externalArtifactSource(name: name, namespace: referenceNamespace, sources: sources)
            case "OCIRepository": return ociURLs["\(referenceNamespace)/\(name)"].map { ociSource(url: $0, sources: sources) } ?? ""
            default: return ""
            }
        case "OCIRepository": return ociSource(url: object.spec?.url ?? "", sources: sources)
        case "ExternalArtifact": return externalArtifactSource(name: object.metadata.name, namespace: namespace, sources: sources)
        default: return ""
        }
    }

    private func ociSource(url: String, sources: [String]) -> String {
        let nudger = OCIRepositoryNudger.Matcher(hosts: config.hosts)
        return sources.first { source in
            OCINames.repository(forSource: source, prefix: config.repositoryPrefix).map { nudger.pointsHere(url, repository: $0) } ?? false
        } ?? ""
    }

    private func externalArtifactSource(name: String, namespace: String, sources: [String]) -> String {
        guard let ea = config.externalArtifacts, ea.namespace == namespace else { return "" }
        return sources.first { source in
            (ea.names[source] ?? OCINames.repository(forSource: source, prefix: nil)?.replacingOccurrences(of: "_", with: "-")) == name
        } ?? ""
    }
}
