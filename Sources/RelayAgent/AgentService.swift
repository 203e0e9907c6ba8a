import ArtifactMirror
import RelayShared
import Logging
import ServiceLifecycle

/// Runs the agent until SIGTERM/SIGINT: the tunnel, and (with `listen`) the Flux endpoint
/// and integrations.
public struct AgentService: Service {
    let runtime: AgentRuntime
    let flux: FluxIntegration?
    let publications: AsyncStream<ArtifactRecord>

    /// Subscribes to the runtime's publications now, so none is missed once it runs.
    public init(runtime: AgentRuntime, flux: FluxIntegration?) {
        self.runtime = runtime
        self.flux = flux
        publications = runtime.publications.subscribe()
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                if let flux {
                    group.addTask { await flux.follow(publications) }
                    group.addTask { await flux.watchStatus() }
                }
                // Bundles and CLI requests dropped in import.inboxDir.
                group.addTask { await InboxWatcher(runtime: runtime).run() }
                await runtime.run()
                group.cancelAll()
            }
        }
        await flux?.shutdown()
    }

    public static func runUntilSignalled(_ runtime: AgentRuntime, logger: Logger,
                                         onFluxListening: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        _ = try runtime.journal()  // opened and locked before anything runs: a second agent on this dataDir stops here
        FileDescriptorLimit.raiseToHard()  // the tunnel, the store and listen share them
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var flux: FluxIntegration?
        if let config = runtime.config.flux, let listen = runtime.config.listen {
            let integration = try FluxIntegration(config: config, store: runtime.store, journal: try runtime.journal(), logger: logger,
                                                  quarantine: runtime.quarantine(), signatures: runtime.signatureCheck.signatures,
                                                  trusted: runtime.signatureCheck)
            flux = integration
            let authFailures = AuthFailureLimiter(metricsPrefix: "relay_agent", logger: logger)
            services.append(.init(service: try integration.endpoint.application(
                host: listen.host, port: listen.port, limits: runtime.config.httpLimits.fittedToDescriptors(perConnection: 2, logger: logger),
                authFailures: authFailures, onListening: onFluxListening)))
            services.append(.init(service: authFailures))
        }
        services.insert(.init(service: AgentService(runtime: runtime, flux: flux)), at: 0)
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
