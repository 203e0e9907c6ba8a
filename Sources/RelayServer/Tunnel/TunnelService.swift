import ArtifactMirror
import Crypto
import Foundation
import GRPCCore
import Logging
import Synchronization
import RelayShared
import Wire

/// The relay's side of the protocol: one `Connect` control stream per agent, and `Fetch`
/// streams for artifact bytes.
///
/// A class: every session's long-lived task holds it, and a struct of twenty fields was copied
/// into the async frames of each (frames that a task keeps for as long as it lives).
final class TunnelService: Relay_V1_Tunnel.ServiceProtocol, Sendable {
    /// Valid tokens in memory, kept fresh by one loop (see `AccessDirectory`).
    let access: AccessDirectory
    /// Live Connect streams, watched relay-wide for silence and revocation.
    let sessions: LiveSessions
    /// When each connection last received bytes (agents on transport keepalive).
    let connectionClocks: ConnectionClocks
    /// New sessions per second (`limits.sessionsPerSecond`); beyond it, a quick refusal.
    let admission: SessionAdmission
    /// Connects, disconnects and deliveries, many to a transaction.
    let commits: GroupCommit
    let hub: DesiredStateHub
    let registry: Registry
    let store: ArtifactStore
    let limits: TunnelLimits
    let fetches: FetchLimiter
    /// Artifact bytes on their way out, relay-wide: each chunk waits for room.
    let outbound: OutboundBytes
    let faults: FaultInjection
    /// Signs each artifact's OCI manifest (cosign format); the signature travels in DesiredState.
    let signer: RelaySigner
    let logger: Logger
    /// Chunk checksums computed when an artifact is packaged (see `ChunkHashCache`).
    let chunkHashes: ChunkHashCache
    /// Where stored status goes live.
    let statusFeed: StatusFeed
    /// Failed tokens per client address: beyond a burst, refused before the token is checked.
    let authFailures: AuthFailureLimiter
    /// Which agents have live sessions (registry `connected`, `relay_agents_connected`).
    let presence: AgentPresence
    /// Registry failures as the status an agent gets.
    let registryFailure: RegistryFailure
    /// With `tls.bindClientCertificate`: the client certificate names of open connections; a
    /// call is served only when its certificate names the agent its token belongs to.
    let boundCertificates: ClientCertificateNames?
    /// DesiredState entries already made, by artifact.
    private let wireArtifacts = WireArtifactCache()

    init(access: AccessDirectory,
         sessions: LiveSessions,
         connectionClocks: ConnectionClocks,
         admission: SessionAdmission,
         commits: GroupCommit,
         hub: DesiredStateHub,
         registry: Registry,
         store: ArtifactStore,
         limits: TunnelLimits,
         fetches: FetchLimiter,
         outbound: OutboundBytes,
         faults: FaultInjection,
         signer: RelaySigner,
         logger: Logger,
         chunkHashes: ChunkHashCache,
         statusFeed: StatusFeed,
         authFailures: AuthFailureLimiter,
         presence: AgentPresence,
         registryFailure: RegistryFailure,
         boundCertificates: ClientCertificateNames?) {
        self.access = access
        self.sessions = sessions
        self.connectionClocks = connectionClocks
        self.admission = admission
        self.commits = commits
        self.hub = hub
        self.registry = registry
        self.store = store
        self.limits = limits
        self.fetches = fetches
        self.outbound = outbound
        self.faults = faults
        self.signer = signer
        self.logger = logger
        self.chunkHashes = chunkHashes
        self.statusFeed = statusFeed
        self.authFailures = authFailures
        self.presence = presence
        self.registryFailure = registryFailure
        self.boundCertificates = boundCertificates
    }

    static let relayVersion = "relay-server/0.3"

    private func authenticate(_ metadata: Metadata, context: ServerContext, call: String) async throws -> (identity: AgentIdentity, tokenSHA256: String) {
        let address = AuthFailureLimiter.key(grpcPeer: context.remotePeer)
        if case .throttled(let seconds) = authFailures.admit(address, surface: "tunnel") {
            throw RPCError(code: .resourceExhausted, message: "too many failed authentications from this address; retry in \(seconds) s",
                           metadata: ["grpc-retry-pushback-ms": "\(seconds * 1000)"])
        }
        let header = metadata[stringValues: "authorization"].first(where: { _ in true })
        let hash = AgentAuthenticator.tokenHash(authorization: header)
        var identity: AgentIdentity?
        if let hash {
            do { identity = try await access.identity(forTokenSHA256: hash) } catch {
                throw registryFailure.rpcError(error, while: "check the agent's token")
            }
        }
        guard let hash, let identity else {
            authFailures.recordFailure(address, surface: "tunnel", reason: "bad or missing bearer token on \(call)")
            throw RPCError(code: .unauthenticated,
                           message: "invalid, revoked or missing bearer token: check the agent's tokenFile against the relay's agents (relay.yaml agents[].tokenSHA256, or relay-server agents list)")
        }
        try checkCertificate(of: identity.name, peer: ConnectionKey.of(context), call: call)
        return (identity, hash)
    }

    /// With `tls.bindClientCertificate`, the client certificate must name the agent (its
    /// subject CN or one of its DNS SANs equals the agent's name).
    private func checkCertificate(of agent: String, peer: String, call: String) throws {
        guard let boundCertificates else { return }
        let names = boundCertificates.names(forPeer: peer)
        guard !names.contains(agent) else { return }
        let presented = names.isEmpty ? "no name" : names.map { "'\($0)'" }.joined(separator: ", ")
        logger.warning("refused: client certificate does not name the token's agent", metadata: [
            "call": "\(call)", "agent": "\(agent)", "certificate": "\(presented)"])
        throw RPCError(code: .permissionDenied,
                       message: "the client certificate names \(presented), but the token belongs to agent '\(agent)' "
                           + "(tls.bindClientCertificate): give each agent its own certificate, with CN or a DNS SAN equal to its name")
    }

    // MARK: Connect

    func connect(request: StreamingServerRequest<Relay_V1_AgentMessage>,
                 context: ServerContext) async throws -> StreamingServerResponse<Relay_V1_RelayMessage> {
        let (agent, tokenHash) = try await authenticate(request.metadata, context: context, call: "Connect")
        // After the token (a memory lookup): strangers do not use up the admission rate.
        if case .refused(let retryAfter) = admission.admit() {
            throw admission.refusal(retryAfter: retryAfter)
        }
        return StreamingServerResponse { writer in
            try await self.serveConnection(agent: agent, tokenSHA256: tokenHash, connection: self.connectionClocks.clock(for: ConnectionKey.of(context)),
                                           messages: request.messages, writer: writer)
            return [:]
        }
    }

    /// Runs the session; one reader task feeds it the agent's messages.
    private func serveConnection(agent: AgentIdentity, tokenSHA256: String, connection: ConnectionClock?, messages: RPCAsyncSequence<Relay_V1_AgentMessage, any Error>,
                                 writer: RPCWriter<Relay_V1_RelayMessage>) async throws {
        let live = sessions.open(agent: agent.name, sources: agent.sources, tokenSHA256: tokenSHA256, connection: connection)
        defer { sessions.close(live) }
        let subscription = await hub.subscribe(agent: agent.name, sources: agent.sources, deliver: { live.deliver($0) })
        defer { Task { await hub.unsubscribe(subscription) } }
        // Revoked between the check and `open` (the push would have missed it).
        if try await !access.isValid(tokenSHA256, agent: agent.name) { live.yield(.revoked) }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in messages { live.yield(.message(message)) }
                } catch {}
                live.yield(.closed)
            }
            defer { group.cancelAll() }
            var session = TunnelSession(service: self, agent: agent, live: live, subscription: subscription, writer: writer)
            try await session.run()
        }
    }

    /// A DesiredState entry: the artifact's description, and the relay's signature of the
    /// OCI manifest the agent will serve for exactly that description. Made once per artifact
    /// and kept: a fan-out sends the same entry to every agent of its source, and building it
    /// (the manifest, its digest, the key's id) was a quarter of the relay's CPU in a
    /// 10,000-agent fan-out (perf).
    func wireArtifact(_ artifact: PackagedArtifact) -> Relay_V1_Artifact {
        var wire = wireArtifacts.entry(for: artifact) { makeWireArtifact(artifact) }
        faults.apply(toSignatureOf: &wire)
        return wire
    }

    private func makeWireArtifact(_ artifact: PackagedArtifact) -> Relay_V1_Artifact {
        let manifest = RelaySigner.manifest(for: artifact)
        let signature = signer.signature(for: manifest, source: artifact.source)
        return Relay_V1_Artifact.with {
            $0.source = artifact.source
            $0.revision = artifact.revision
            $0.digest = artifact.digest
            $0.size = artifact.size
            $0.commit = artifact.commit
            $0.origin = artifact.origin
            $0.createdUnixMs = RelaySigner.wireMilliseconds(artifact.createdAt)
            $0.manifestDigest = manifest.digest
            $0.signaturePayload = signature.payload
            $0.signature = signature.signature
            $0.signingKeyID = signer.key.publicKey.id
            if let payload = artifact.oci {
                $0.oci = .with { oci in
                    oci.kind = payload.kind.rawValue
                    oci.manifest = payload.manifest
                    oci.mediaType = payload.mediaType
                    oci.blobs = payload.blobs.keys.sorted().map { digest in .with { $0.digest = digest; $0.data = payload.blobs[digest]! } }
                    oci.tags = payload.tags
                    oci.signatureLayers = (payload.signatureLayers ?? []).map { layer in
                        .with { $0.mediaType = layer.mediaType; $0.data = layer.data; $0.annotations = layer.annotations }
                    }
                }
            }
        }
    }

    // MARK: Fetch

    func fetch(request: ServerRequest<Relay_V1_FetchRequest>,
               context: ServerContext) async throws -> StreamingServerResponse<Relay_V1_FetchChunk> {
        let agent = try await authenticate(request.metadata, context: context, call: "Fetch").identity
        let digest = request.message.digest
        guard digest.hasPrefix("sha256:"), digest.count == 71 else {
            throw RPCError(code: .invalidArgument, message: "digest must be sha256:<64 hex>")
        }
        // An async read: a Fetch burst must not park every cooperative thread on a synchronous
        // registry read (that deadlocked the relay with 200 agents fetching at once).
        let granted: PackagedArtifact?
        do { granted = try await registry.artifact(digest: digest, amongSources: Array(agent.sources)) } catch {
            throw registryFailure.rpcError(error, while: "read the agent's grants")
        }
        guard let artifact = granted else {
            throw RPCError(code: .notFound, message: "no artifact \(digest) among the sources granted to \(agent.name)")
        }
        let path = store.path(forDigest: digest).path
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw RPCError(code: .notFound, message: "artifact \(digest) is no longer stored on the relay; it will be re-packed")
        }
        let offset = request.message.offset
        RelayMetrics.fetches.increment()
        if offset > 0 { RelayMetrics.fetchResumes.increment() }
        guard offset <= artifact.size else {
            throw RPCError(code: .outOfRange, message: "offset \(offset) is past the end (\(artifact.size) bytes)")
        }
        let admission = FetchLimiter.Limits(perAgent: limits.maxConcurrentFetches, streams: limits.maxFetchStreams,
                                            queued: limits.maxQueuedFetches)
        // The common refusals (this agent at its limit, the relay's queue full), answered before any response.
        if let refusal = fetches.refusal(agent.name, limits: admission) { throw refusal }
        let chunkSize = limits.maxChunkBytes
        let peer = ConnectionKey.of(context)
        // The slot and the file belong to the response body: whatever ends it gives them back,
        // and a body gRPC never runs (the client was gone first) holds neither. A body waits
        // here for a relay-wide slot (limits.maxFetchStreams) in FIFO order.
        return StreamingServerResponse { [self] writer in
            try await fetches.admit(agent.name, limits: admission)
            defer { fetches.release(agent.name, limits: admission) }
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw RPCError(code: .notFound, message: "artifact \(digest) is no longer stored on the relay; it will be re-packed")
            }
            defer { try? handle.close() }
            do {
                try handle.seek(toOffset: offset)
                var position = offset
                while position < artifact.size {
                    await outbound.waitForRoom()
                    try Task.checkCancellation()
                    let count = Int(min(UInt64(chunkSize), artifact.size - position))
                    guard let data = try handle.read(upToCount: count), data.count == count else {
                        throw RPCError(code: .dataLoss, message: "artifact \(digest) is shorter on disk than recorded")
                    }
                    var chunk = Relay_V1_FetchChunk()
                    chunk.offset = position
                    chunk.totalSize = artifact.size
                    chunk.chunkSha256 = chunkHashes.hash(of: data, digest: digest, offset: position, chunkSize: chunkSize)
                    chunk.data = faults.apply(to: data)
                    // Counted out by TLSBufferBounds as the socket takes it, which it does for
                    // writes larger than one slice: a smaller chunk (an artifact's tail) is not
                    // counted in (it stayed "in flight" until its connection closed).
                    if count > TLSBufferBounds.sliceBytes { outbound.reserve(count, peer: peer) }
                    try await writer.write(chunk)
                    RelayMetrics.fetchBytes.increment(by: count)
                    position += UInt64(count)
                }
                logger.info("fetch served", metadata: ["agent": "\(agent.name)", "digest": "\(digest)",
                                                       "offset": "\(offset)", "bytes": "\(position - offset)"])
            } catch {
                logger.info("fetch ended early", metadata: ["agent": "\(agent.name)", "digest": "\(digest)",
                                                            "offset": "\(offset)", "error": "\(error)"])
                throw error
            }
            return [:]
        }
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// `Relay_V1_Artifact` entries by the artifact they describe; a bound, not an LRU (making one
/// again costs a manifest digest and a cached signature).
final class WireArtifactCache: Sendable {
    private let entries = Mutex<[PackagedArtifact: Relay_V1_Artifact]>([:])
    static let capacity = 4096

    func entry(for artifact: PackagedArtifact, make: () -> Relay_V1_Artifact) -> Relay_V1_Artifact {
        if let known = entries.withLock({ $0[artifact] }) { return known }
        let made = make()
        entries.withLock { entries in
            if entries.count >= Self.capacity { entries.removeAll() }
            entries[artifact] = made
        }
        return made
    }
}
