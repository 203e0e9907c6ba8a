import ArtifactMirror
import Foundation
import Logging

/// Packages every source: once at start, then every `interval`, and at once when a webhook
/// names it. Each source has its own loop, so a slow or failing remote never delays another.
/// Triggers arriving while a pack runs are coalesced into one more pack.
public final class PackagingScheduler: Sendable {
    private let sources: [ResolvedServerConfig.Source]
    private let packer: ArtifactPacker
    private let registry: Registry
    private let hub: DesiredStateHub
    private let logger: Logger
    private let triggers: [String: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)]
    private let maxArtifactBytes: UInt64
    /// Runs after a new artifact is packaged, before agents are told about it.
    private let beforePublish: (@Sendable (PackagedArtifact) async -> Void)?
    /// Helm chart and OCI artifact sources.
    private let upstreams: UpstreamPackager

    public init(sources: [ResolvedServerConfig.Source], packer: ArtifactPacker, registry: Registry,
                hub: DesiredStateHub, maxArtifactBytes: UInt64 = .max, logger: Logger,
                beforePublish: (@Sendable (PackagedArtifact) async -> Void)? = nil) {
        self.maxArtifactBytes = maxArtifactBytes
        self.beforePublish = beforePublish
        self.sources = sources
        self.packer = packer
        self.registry = registry
        self.hub = hub
        self.logger = logger
        upstreams = UpstreamPackager(store: packer.store, maxArtifactBytes: maxArtifactBytes, logger: logger)
        var triggers: [String: (AsyncStream<Void>, AsyncStream<Void>.Continuation)] = [:]
        for source in sources {
            triggers[source.name] = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        }
        self.triggers = triggers
    }

    /// Asks for an immediate pack of these sources (unknown names are ignored).
    public func trigger(_ names: [String]) {
        for name in names { triggers[name]?.continuation.yield() }
    }

    /// Runs until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            for source in sources {
                group.addTask { await self.loop(source) }
            }
        }
    }

    /// One consumer of the source's trigger stream packs; a timer feeds the same stream
    /// every interval. The stream keeps at most one pending trigger, so bursts coalesce.
    private func loop(_ source: ResolvedServerConfig.Source) async {
        guard let (stream, continuation) = triggers[source.name] else { return }
        continuation.yield()  // pack at start
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: source.interval)
                    continuation.yield()
                }
            }
            group.addTask {
                for await _ in stream {
                    if Task.isCancelled { break }
                    await self.packOnce(source)
                }
            }
            // Both children run until the scheduler's task is cancelled.
        }
    }

    /// Packs one source now and publishes the result. Errors are logged and retried at the
    /// next interval or trigger.
    /// Replicas sharing a PostgreSQL take turns per source (`Registry.asOnlyPackager`), and a
    /// commit another replica recorded must package to the digest it recorded.
    @discardableResult
    public func packOnce(_ source: ResolvedServerConfig.Source) async -> PackagedArtifact? {
        do {
            return try await registry.asOnlyPackager(of: source.name) { await self.packHoldingTheLock(source) }
        } catch {
            logger.error("packaging failed", metadata: ["source": "\(source.name)", "error": "\(error)"])
            return nil
        }
    }

    private func packHoldingTheLock(_ source: ResolvedServerConfig.Source) async -> PackagedArtifact? {
        if let upstream = source.upstream { return await mirror(source, upstream) }
        guard let remote = source.remote else { return nil }
        let started = ContinuousClock.now
        do {
            let packaging = PackagingFingerprint.of(source)
            let result = try await packer.pack(PackagingFingerprint.request(source, remote: remote, reference: source.reference))
            let artifact = PackagedArtifact(source: source.name, revision: result.revision, digest: result.digest,
                                            size: result.size, commit: result.commit, origin: remote.identity,
                                            createdAt: Date())
            if registry.dialect == .postgres,
               let recorded = try await registry.recordedDigest(source: source.name, commit: result.commit, packaging: packaging),
               recorded != result.digest {
                RevisionFollower.mismatch(source: source.name, logger: logger, commit: result.commit, recorded: recorded, packaged: result.digest)
                return nil
            }
            guard result.size <= maxArtifactBytes else {
                logger.error("artifact exceeds limits.maxArtifactBytes; not offered to agents", metadata: [
                    "source": "\(source.name)", "revision": "\(result.revision)", "size": "\(result.size)",
                    "limit": "\(maxArtifactBytes)"])
                return nil
            }
            try await offer(artifact, packaging: packaging, started: started, cached: result.cached)
            return artifact
        } catch {
            logger.error("packaging failed", metadata: ["source": "\(source.name)", "error": "\(error)"])
            return nil
        }
    }

    /// Records and offers `artifact` unless it is what agents already get.
    private func offer(_ artifact: PackagedArtifact, packaging: String, started: ContinuousClock.Instant, cached: Bool) async throws {
        let current = await hub.artifact(forSource: artifact.source)
        guard current?.digest != artifact.digest || current?.revision != artifact.revision || current?.oci != artifact.oci else { return }
        await beforePublish?(artifact)
        try await registry.record(artifact, packaging: packaging)
        await hub.publish(artifact)
        RelayMetrics.packaged(source: artifact.source, duration: ContinuousClock.now - started)
        logger.info("packaged", metadata: [
            "source": "\(artifact.source)", "revision": "\(artifact.revision)", "digest": "\(artifact.digest)",
            "size": "\(artifact.size)", "cached": "\(cached)",
            "duration_ms": "\(Self.milliseconds(ContinuousClock.now - started))",
        ])
    }

    /// A Helm chart or OCI artifact source: mirrored, checked, offered. A failure offers
    /// nothing new (agents keep what they have) and is logged and counted with its code.
    private func mirror(_ source: ResolvedServerConfig.Source, _ upstream: Upstream) async -> PackagedArtifact? {
        let started = ContinuousClock.now
        do {
            let current = await hub.artifact(forSource: source.name)
            let artifact = try await upstreams.package(source: source.name, upstream: upstream, current: current)
            try await offer(artifact, packaging: "", started: started, cached: artifact == current)
            RelayMetrics.upstreamSucceeded(source: source.name)
            return artifact
        } catch let error as UpstreamError {
            RelayMetrics.upstreamFailed(source: source.name, code: error.code.rawValue)
            logger.error("mirroring failed; agents keep what they have", metadata: [
                "source": "\(source.name)", "upstream": "\(upstream.origin)", "code": "\(error.code.rawValue)", "error": "\(error.message)"])
            return nil
        } catch {
            logger.error("mirroring failed", metadata: ["source": "\(source.name)", "error": "\(error)"])
            return nil
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }
}
