import ArtifactMirror
import AsyncHTTPClient
import Logging
import ServiceLifecycle

/// Everything between the store and Flux, built from `flux:` in agent.yaml: the catalog and
/// HTTP endpoint, and the notifier that updates ExternalArtifacts and wakes OCIRepositories.
public final class FluxIntegration: Sendable {
    public let config: ResolvedFluxConfig
    public let catalog: CatalogHolder
    public let endpoint: FluxEndpoint
    public let notifier: FluxNotifier
    let kube: KubeClient?
    let http: HTTPClient?
    let logger: Logger

    public init(config: ResolvedFluxConfig, store: ArtifactStore, journal: StatusJournal, logger: Logger) throws {
        self.config = config
        self.logger = logger
        catalog = CatalogHolder(store: store, repositoryPrefix: config.repositoryPrefix)
        var options = FluxEndpoint.Options(oci: config.ociEnabled, artifacts: true, pullAuth: config.pullAuth)
        options.events = FluxEventReceiver(journal: journal, hmacKey: config.eventsHMACKey)
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
    }

    /// Keeps the catalog current and tells Flux about each publication, until cancelled.
    /// Reads the store first, and brings every source's Flux objects up to date.
    func follow(_ publications: AsyncStream<ArtifactRecord>) async {
        do { try catalog.reload() } catch { logger.error("cannot read the store index", metadata: ["error": "\(error)"]) }
        for record in catalog.catalog.current.values { await notifier.submit(record) }
        for await record in publications {
            // The catalog first: Flux, once woken, must find the new tag.
            do { try catalog.reload() } catch { logger.error("cannot read the store index", metadata: ["error": "\(error)"]) }
            await notifier.submit(record)
        }
        await notifier.stop()
    }

    func shutdown() async {
        await kube?.shutdown()
        try? await http?.shutdown()
    }
}
