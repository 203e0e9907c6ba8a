import ArtifactMirror
import Foundation
import Logging
import Metrics
import Synchronization

/// Replicas on one PostgreSQL: this replica offers its agents the newest revision any
/// replica recorded. On a wake-up (`relay_revision`) and every `interval` it reads the newest
/// revision of every configured source; one this replica does not offer yet is published once
/// its bytes are here, from the local store when it holds that digest, or packaged here from
/// the recorded commit, and then only if packaging gave the recorded digest (packaging is
/// reproducible; a difference means the replicas disagree, e.g. on a source's `ignore`). A
/// different digest is logged, counted (`relay_replica_digest_mismatches_total`) and never
/// served.
public final class RevisionFollower: Sendable {
    private let sources: [ResolvedServerConfig.Source]
    private let registry: Registry
    private let hub: DesiredStateHub
    private let store: ArtifactStore
    private let packer: ArtifactPacker
    private let beforePublish: @Sendable (PackagedArtifact) async -> Void
    private let logger: Logger
    private let interval: Duration
    /// limits.maxArtifactBytes, for mirrored (Helm, OCI) sources.
    private let maxArtifactBytes: UInt64
    private let wake: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)
    /// Digests this replica packaged differently: not packaged again every round.
    private let refused = Mutex<Set<String>>([])

    public init(sources: [ResolvedServerConfig.Source], registry: Registry, hub: DesiredStateHub, store: ArtifactStore,
                packer: ArtifactPacker, interval: Duration = .seconds(5), maxArtifactBytes: UInt64 = .max, logger: Logger,
                beforePublish: @escaping @Sendable (PackagedArtifact) async -> Void) {
        self.sources = sources
        self.registry = registry
        self.hub = hub
        self.store = store
        self.packer = packer
        self.interval = interval
        self.maxArtifactBytes = maxArtifactBytes
        self.logger = logger
        self.beforePublish = beforePublish
        wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a catch-up now (coalesced).
    public func poke() { wake.continuation.yield() }

    /// Runs until cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.interval)
                    self.poke()
                }
            }
            for await _ in wake.stream {
                if Task.isCancelled { break }
                await catchUp()
            }
            group.cancelAll()
        }
    }

    func catchUp() async {
        let recorded: [String: (artifact: PackagedArtifact, packaging: String)]
        do { recorded = try await registry.latestRecorded() } catch {
            logger.warning("cannot read the recorded revisions; will retry", metadata: ["error": "\(error)"])
            return
        }
        for source in sources {
            guard let (artifact, packaging) = recorded[source.name] else { continue }
            // Packaged another way (relay.yaml differs, e.g. during a rolling change): not
            // this replica's to reproduce; it serves what it packages itself.
            guard packaging == PackagingFingerprint.of(source) else { continue }
            if let current = await hub.artifact(forSource: source.name),
               current.digest == artifact.digest || current.createdAt > artifact.createdAt { continue }
            guard refused.withLock({ !$0.contains(artifact.digest) }) else { continue }
            if await ensureBytes(artifact, of: source) {
                await beforePublish(artifact)
                if await hub.publishUnlessOlder(artifact) {
                    logger.info("offering a revision another replica packaged", metadata: [
                        "source": "\(source.name)", "revision": "\(artifact.revision)", "digest": "\(artifact.digest)"])
                }
            }
        }
    }

    /// Whether the local store holds `artifact`'s bytes, packaging its commit here if needed.
    private func ensureBytes(_ artifact: PackagedArtifact, of source: ResolvedServerConfig.Source) async -> Bool {
        if FileSystemCheck.exists(store.path(forDigest: artifact.digest).path) { return true }
        if let upstream = source.upstream {
            // Mirrored, not packaged: bytes equal to the upstream's by digest. Offered here when
            // the upstream still serves that version; otherwise this replica's own poll records
            // the newer one.
            let mirrored = try? await UpstreamPackager(store: store, maxArtifactBytes: maxArtifactBytes, logger: logger)
                .package(source: source.name, upstream: upstream, current: nil)
            return mirrored?.digest == artifact.digest && mirrored?.oci?.manifestDigest == artifact.oci?.manifestDigest
        }
        guard let remote = source.remote else { return false }
        do {
            let result = try await packer.pack(PackagingFingerprint.request(source, remote: remote, reference: .commit(artifact.commit, branch: source.branch)))
            return verify(result.digest, result.revision, against: artifact)
        } catch {
            logger.error("cannot package a revision another replica recorded; will retry", metadata: [
                "source": "\(source.name)", "commit": "\(artifact.commit)", "error": "\(error)"])
            return false
        }
    }

    /// The check both ways of packaging here go through: same commit, same digest.
    func verify(_ digest: String, _ revision: String, against artifact: PackagedArtifact) -> Bool {
        guard digest != artifact.digest else { return true }
        refused.withLock { _ = $0.insert(artifact.digest) }
        Self.mismatch(source: artifact.source, logger: logger, commit: artifact.commit, recorded: artifact.digest, packaged: digest)
        return false
    }

    static func mismatch(source: String, logger: Logger, commit: String, recorded: String, packaged: String) {
        Counter(label: "relay_replica_digest_mismatches_total", dimensions: [("source", source)]).increment()
        logger.error("refused: this replica packaged a recorded commit into a different artifact; not serving it", metadata: [
            "source": "\(source)", "commit": "\(commit)", "recorded": "\(recorded)", "packaged": "\(packaged)",
            "fix": "give every replica the same relay.yaml for this source (url, ref, ignore) and the same relay-server version",
        ])
    }
}
