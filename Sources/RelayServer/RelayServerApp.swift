import ArtifactMirror
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Hummingbird
import Logging
import RelayShared
import ServiceLifecycle

/// relay-server: wires the registry, the packaging scheduler, the tunnel and the webhook
/// endpoint together and runs them until SIGTERM/SIGINT, then drains: every agent is told
/// to reconnect after a jittered delay before the tunnel closes.
public enum RelayServerApp {
    public static func run(config: ResolvedServerConfig, logger: Logger) async throws {
        let httpLimits = config.httpLimits.fittedToDescriptors(logger: logger)
        // Failed authentication, per client address, on the tunnel and the HTTP port alike.
        let authFailures = AuthFailureLimiter(metricsPrefix: "relay", logger: logger)
        let data = config.dataDirectory
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let registry = try await Registry.open(config, logger: logger)
        try await registry.syncAgents(config.agents.map { ($0.name, $0.tokenSHA256, $0.sources) }, replica: config.replica)

        let store = try ArtifactStore(root: data.appendingPathComponent("store"), retention: 10)
        // Before packaging starts: what a killed relay was writing (another process's live
        // files, e.g. `artifact-mirror pack` on a shared store, are locked and stay).
        let orphans = store.removeOrphanedTemporaryFiles()
        if orphans > 0 { logger.notice("removed temporary files left by a killed process", metadata: ["files": "\(orphans)"]) }
        let packer = ArtifactPacker(cacheDirectory: data.appendingPathComponent("mirrors"), store: store)
        let configured = Set(config.sources.map(\.name))
        let known = try await registry.latestArtifacts().filter {
            configured.contains($0.key) && FileSystemCheck.exists(store.path(forDigest: $0.value.digest).path)
        }
        let governed = RolloutController.governed(config)
        let hub = DesiredStateHub(initial: known, supersededDelay: config.drainRetryAfter, governed: Set(governed.map(\.name)))
        let rollouts = RolloutController(sources: governed, freezes: config.freezes, registry: registry, hub: hub,
                                         notifications: config.notifications, publicURL: config.publicURL, replica: config.replica, logger: logger)
        let accessFile = config.access.map {
            AccessFileWatcher(settings: $0, config: config, registry: registry, hub: hub, store: store, logger: logger)
        }
        // The access file's grants over relay.yaml's (just synchronised), before agents are served.
        try await accessFile?.reapply()
        if config.sources.contains(where: { !($0.gitlab?.environments.isEmpty ?? true) }) { try await Notifier.startDeployments(registry) }
        // Assignments before the first agent is served (it would get nothing of a governed source).
        await rollouts.pass()
        // Chunk checksums are computed once per artifact, when it is packaged (or, for what
        // the store already holds, in the background at start), not by every Fetch.
        let chunkHashes = ChunkHashCache()
        let chunkSize = config.limits.maxChunkBytes
        let scheduler = PackagingScheduler(sources: config.sources, packer: packer, registry: registry, hub: hub,
                                           maxArtifactBytes: config.limits.maxArtifactBytes, logger: logger,
                                           beforePublish: { artifact in
            await chunkHashes.prime(path: store.path(forDigest: artifact.digest).path, digest: artifact.digest,
                                    chunkSize: chunkSize)
        })
        Task.detached(priority: .background) {
            for artifact in known.values {
                await chunkHashes.prime(path: store.path(forDigest: artifact.digest).path, digest: artifact.digest,
                                        chunkSize: chunkSize)
            }
        }

        let statusFeed = StatusFeed(after: try await registry.latestStatusID())
        // The tunnel's own TLS (see TunnelListener): TLS 1.3 unless tls.minVersion says 1.2,
        // and with tls.bindClientCertificate each connection's certificate names kept for the calls.
        let certificateNames = ClientCertificateNames()
        let tunnelTLS = try TunnelListener.makeContext(certificateFile: config.certificateFile, keyFile: config.keyFile,
                                                       clientCAFile: config.clientCAFile, minimumVersion: config.tlsMinimumVersion)
        let registryFailure = RegistryFailure(directory: registry.location)
        // Created on first start (the default key under dataDir); agents with `trust` need its public key.
        let signer = try RelaySigner.load(config, logger: logger)
        let sessions = LiveSessions()
        let access = try await AccessDirectory(registry: registry, sessions: sessions, logger: logger)
        let commits = GroupCommit(registry: registry)
        let admission = SessionAdmission(sessionsPerSecond: Double(config.limits.sessionsPerSecond))
        let outbound = OutboundBytes(limit: config.limits.maxFetchBytesInFlight)
        let connectionClocks = ConnectionClocks()
        let faults = FaultInjection()
        let tunnel = TunnelService(access: access, sessions: sessions, connectionClocks: connectionClocks, admission: admission, commits: commits,
                                   hub: hub, registry: registry,
                                   store: store, limits: config.limits, fetches: FetchLimiter(), outbound: outbound,
                                   faults: faults, signer: signer, logger: logger, chunkHashes: chunkHashes, statusFeed: statusFeed,
                                   authFailures: authFailures,
                                   presence: AgentPresence(commits: commits, failure: registryFailure, replica: config.replica), registryFailure: registryFailure,
                                   boundCertificates: config.bindClientCertificate ? certificateNames : nil)
        var transport = HTTP2ServerTransport.Custom<TunnelListener>.Config.defaults
        // Large frames and windows for bulk Fetch streams (measured on this kind of machine:
        // 16 KiB frames collapse throughput with several streams).
        transport.http2.maxFrameSize = 1 << 20
        transport.http2.targetWindowSize = 4 << 20
        transport.rpc.maxRequestPayloadSize = config.limits.maxMessageBytes
        // Connect + the allowed Fetch streams, with room for a reconnect overlapping.
        transport.http2.maxConcurrentStreams = 2 * (config.limits.maxConcurrentFetches + 1)
        transport.connection.flushCoalescing = nil
        if !faults.legacyKeepalive {
            transport.connection.keepalive = TunnelKeepalive.config(heartbeatInterval: config.limits.heartbeatInterval)
        }
        let grpc = GRPCServer(transport: HTTP2ServerTransport.Custom(
            listenerFactory: TunnelListener(host: config.listen.host == "localhost" ? "127.0.0.1" : config.listen.host,
                                            port: config.listen.port, context: tunnelTLS, peers: certificateNames,
                                            handshakes: HandshakeGate(limit: config.limits.maxPendingHandshakes),
                                            outbound: outbound, clocks: connectionClocks, logger: logger),
            config: transport
        ), services: [tunnel])

        let router = WebhookRouter.make(webhookToken: config.webhookToken, sources: config.sources,
                                        scheduler: scheduler, hub: hub, authFailures: authFailures)
        StatusAPI(registry: registry, feed: statusFeed, readers: config.readers + config.admins, sources: config.sources.map(\.name), logger: logger)
            .add(to: router)
        RolloutAPI(registry: registry, rollouts: rollouts, store: store, readers: config.readers, admins: config.admins,
                   sources: config.sources.map(\.name), logger: logger)
            .add(to: router)
        let http = Application(router: router, server: .limited(httpLimits, metricsPrefix: "relay"),
                               configuration: .init(address: .hostname(config.http.host, port: config.http.port),
                                                    serverName: "relay-server"),
                               logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: TunnelServerService(server: grpc, hub: hub, drainRetryAfter: config.drainRetryAfter,
                                               drainRedirect: config.drainRedirect?.description ?? "",
                                               sessionsPerSecond: config.limits.sessionsPerSecond, logger: logger)),
            .init(service: SessionWatchService(sessions: sessions, access: access, heartbeatInterval: config.limits.heartbeatInterval)),
            .init(service: http),
            .init(service: authFailures),
            .init(service: SchedulerService(scheduler: scheduler)),
            .init(service: StatusRetention(registry: registry, policy: config.statusRetention, logger: logger)),
            .init(service: StatusFeedFollower(feed: statusFeed, registry: registry)),
            .init(service: RolloutService(controller: rollouts, freezePeriods: GitLabFreezePeriods(
                config: config, registry: registry, logger: logger, changed: { rollouts.poke() }), accessFile: accessFile)),
            .init(service: NotifierService(notifier: Notifier(
                registry: registry, feed: statusFeed, sources: config.sources, notifications: config.notifications,
                publicURL: config.publicURL, logger: logger))),
        ]
        if let postgres = registry.store as? PostgresStore {
            // Replicas: offer what the others packaged, and hear of their work at once.
            let follower = RevisionFollower(sources: config.sources, registry: registry, hub: hub, store: store, packer: packer,
                                            maxArtifactBytes: config.limits.maxArtifactBytes, logger: logger) { artifact in
                await chunkHashes.prime(path: store.path(forDigest: artifact.digest).path, digest: artifact.digest, chunkSize: chunkSize)
            }
            services.append(.init(service: RevisionFollowerService(follower: follower)))
            services.append(.init(service: ReplicaLease(registry: registry, replica: config.replica, logger: logger)))
            services.append(.init(service: ReplicaWakeups(store: postgres, handlers: [
                ReplicaWakeups.revision: { follower.poke() },
                ReplicaWakeups.status: { statusFeed.poke() },
                ReplicaWakeups.access: { Task { _ = try? await access.current() } },
            ], logger: logger)))
        }

        logger.info("relay-server starting", metadata: [
            "tunnel": "\(config.listen)", "http": "\(config.http)", "sources": "\(config.sources.count)",
            "agents": "\(config.agents.count)", "dataDir": "\(data.path)", "signingKey": "\(signer.key.publicKey.id)",
            "registry": "\(registry.location)", "replica": "\(config.replica)",
        ])
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        do {
            try await group.run()
        } catch {
            await registry.close()
            throw error
        }
        await registry.close()
    }

}

/// Runs the gRPC server; on graceful shutdown drains the agents first.
struct TunnelServerService: Service {
    let server: GRPCServer<HTTP2ServerTransport.Custom<TunnelListener>>
    let hub: DesiredStateHub
    let drainRetryAfter: Duration
    /// Where agents should reconnect instead (host:port), or "" for here.
    let drainRedirect: String
    /// The admission rate: the drain spreads the fleet's return over connected ÷ this.
    let sessionsPerSecond: Int
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            Task {
                let connected = await hub.subscriberCount
                // A restart must not be slower than a crash: the fleet comes back over the time
                // the admission rate needs for it (×1.2 for agents connecting meanwhile).
                let spread = Duration.seconds(1.2 * Double(connected) / Double(max(1, sessionsPerSecond)))
                logger.info("draining: agents are told to reconnect later", metadata: [
                    "agents": "\(connected)", "spread_ms": "\(spread.milliseconds)"])
                await hub.drain(retryAfter: drainRetryAfter, spread: spread, reason: "relay is shutting down", redirect: drainRedirect)
                try? await Task.sleep(for: .milliseconds(300))
                server.beginGracefulShutdown()
            }
        }
    }
}

/// The relay-wide session watchers: the dead-peer sweep and token revocation.
struct SessionWatchService: Service {
    let sessions: LiveSessions
    let access: AccessDirectory
    let heartbeatInterval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await sessions.watchHeartbeats(interval: heartbeatInterval) }
                group.addTask { await access.watch() }
            }
        }
    }
}

/// The rollout controller and the GitLab freeze-period reader, until shutdown.
struct RolloutService: Service {
    let controller: RolloutController
    let freezePeriods: GitLabFreezePeriods
    let accessFile: AccessFileWatcher?

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await controller.run() }
                group.addTask { await freezePeriods.run() }
                if let accessFile { group.addTask { await accessFile.run() } }
            }
        }
        // Nothing to govern: wait for shutdown (a service that returns would stop the relay).
        try? await gracefulShutdown()
    }
}

struct RevisionFollowerService: Service {
    let follower: RevisionFollower

    func run() async throws {
        await cancelWhenGracefulShutdown { await follower.run() }
    }
}

struct SchedulerService: Service {
    let scheduler: PackagingScheduler

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await scheduler.run()
        }
    }
}

enum FileSystemCheck {
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
}

/// Runs the notifier until shutdown (a service that returned early would stop the relay).
struct NotifierService: Service {
    let notifier: Notifier
    func run() async throws {
        await cancelWhenGracefulShutdown { await notifier.run() }
        if !notifier.isActive { try? await gracefulShutdown() }
    }
}
