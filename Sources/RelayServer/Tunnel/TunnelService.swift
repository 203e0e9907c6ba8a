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
struct TunnelService: Relay_V1_Tunnel.ServiceProtocol {
    let authenticator: AgentAuthenticator
    let hub: DesiredStateHub
    let registry: Registry
    let store: ArtifactStore
    let limits: TunnelLimits
    let fetches: FetchLimiter
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

    static let relayVersion = "relay-server/0.3"

    private func authenticate(_ metadata: Metadata, context: ServerContext, call: String) throws -> (identity: AgentIdentity, tokenSHA256: String) {
        let address = AuthFailureLimiter.key(grpcPeer: context.remotePeer)
        if case .throttled(let seconds) = authFailures.admit(address, surface: "tunnel") {
            throw RPCError(code: .resourceExhausted, message: "too many failed authentications from this address; retry in \(seconds) s",
                           metadata: ["grpc-retry-pushback-ms": "\(seconds * 1000)"])
        }
        let header = metadata[stringValues: "authorization"].first(where: { _ in true })
        guard let agent = authenticator.authenticate(authorization: header) else {
            authFailures.recordFailure(address, surface: "tunnel", reason: "bad or missing bearer token on \(call)")
            throw RPCError(code: .unauthenticated,
                           message: "invalid, revoked or missing bearer token: check the agent's tokenFile against the relay's agents (relay.yaml agents[].tokenSHA256, or relay-server agents list)")
        }
        try checkCertificate(of: agent.identity.name, peer: context.remotePeer, call: call)
        return agent
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
        let (agent, tokenHash) = try authenticate(request.metadata, context: context, call: "Connect")
        return StreamingServerResponse { writer in
            try await self.serveConnection(agent: agent, tokenSHA256: tokenHash, messages: request.messages, writer: writer)
            return [:]
        }
    }

    private enum Event: Sendable {
        case message(Relay_V1_AgentMessage)
        case closed
        case hub(TunnelEvent)
        case tick
    }

    /// One loop owns the writer; readers, the hub and a ticker feed it events.
    private func serveConnection(agent: AgentIdentity, tokenSHA256: String, messages: RPCAsyncSequence<Relay_V1_AgentMessage, any Error>,
                                 writer: RPCWriter<Relay_V1_RelayMessage>) async throws {
        /// The token this session stands on: a Reauthenticate replaces it, a revocation ends it.
        var sessionToken = tokenSHA256
        let (events, sink) = AsyncStream<Event>.makeStream()
        let interval = limits.heartbeatInterval
        let (subscription, hubEvents) = await hub.subscribe(agent: agent.name, sources: agent.sources)
        defer { Task { await hub.unsubscribe(subscription) } }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in messages { sink.yield(.message(message)) }
                } catch {}
                sink.yield(.closed)
            }
            group.addTask {
                for await event in hubEvents { sink.yield(.hub(event)) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: interval / 2)
                    sink.yield(.tick)
                }
            }
            defer { group.cancelAll() }

            var welcomed = false
            var pendingState: TunnelEvent?
            var lastHeard = ContinuousClock.now
            /// Every artifact a DesiredState on this connection offered: what an Ack may name.
            var offered = Set<OfferedArtifact>()
            var session = SessionPresence(agent: agent.name, presence: presence, logger: logger)
            defer { session.ended() }

            for await event in events {
                switch event {
                case .closed:
                    return
                case .tick:
                    if (try? registry.tokenIsValid(sessionToken, agent: agent.name)) == false {
                        logger.warning("agent's token was revoked; ending its session", metadata: ["agent": "\(agent.name)"])
                        try await writer.write(.with { $0.drain = .with {
                            $0.retryAfterMs = 0
                            $0.reason = "token revoked: reconnect with the agent's current token"
                        } })
                        return
                    }
                    if ContinuousClock.now - lastHeard > interval * 2 {
                        logger.warning("agent silent for two heartbeat intervals; closing", metadata: ["agent": "\(agent.name)"])
                        throw RPCError(code: .deadlineExceeded, message: "no heartbeat for \(interval * 2)")
                    }
                case .message(let message):
                    lastHeard = ContinuousClock.now
                    switch message.kind {
                    case .hello(let hello)?:
                        guard !welcomed else { throw RPCError(code: .failedPrecondition, message: "a second Hello on one Connect stream") }
                        try checkVersion(hello.protocolVersion)
                        try session.started(version: hello.agentVersion, held: hello.heldDigests.count)
                        // One session per agent: this one replaces any other (which is drained).
                        let superseded = await hub.claim(subscription)
                        if superseded > 0 {
                            RelayMetrics.sessionsSuperseded.increment(by: superseded)
                            logger.warning("a newer session replaced the agent's other session; the older one is drained", metadata: [
                                "agent": "\(agent.name)", "drained": "\(superseded)"])
                        }
                        try await writer.write(.with {
                            $0.welcome = .with {
                                $0.protocolVersion = ProtocolVersion.current.description
                                $0.relayVersion = Self.relayVersion
                                $0.agentName = agent.name
                                $0.heartbeatIntervalMs = UInt32(interval.milliseconds)
                                $0.limits = .with {
                                    $0.maxChunkBytes = UInt32(limits.maxChunkBytes)
                                    $0.maxArtifactBytes = limits.maxArtifactBytes
                                    $0.maxConcurrentFetches = UInt32(limits.maxConcurrentFetches)
                                    $0.maxMessageBytes = UInt32(limits.maxMessageBytes)
                                }
                            }
                        })
                        welcomed = true
                        if let pending = pendingState {
                            pendingState = nil
                            if try await send(pending, to: writer, offered: &offered) { return }
                        }
                    case .heartbeat(let beat)?:
                        if !beat.reply {
                            try await writer.write(.with { $0.heartbeat = .with {
                                $0.sequence = beat.sequence
                                $0.sentUnixNanos = beat.sentUnixNanos
                                $0.reply = true
                            } })
                        }
                    case .ack(let ack)?:
                        // Only after Hello, and only for what this relay offered (on this
                        // connection, or as the source's current revision): nothing else is stored.
                        guard welcomed else {
                            throw RPCError(code: .failedPrecondition, message: "Ack before Hello: the first message on Connect must be Hello")
                        }
                        let acked = OfferedArtifact(source: ack.source, revision: ack.revision, digest: ack.digest)
                        var wasOffered = offered.contains(acked)
                        if !wasOffered, agent.sources.contains(ack.source), let current = await hub.artifact(forSource: ack.source) {
                            wasOffered = OfferedArtifact(current) == acked
                        }
                        guard wasOffered else {
                            logger.warning("refused: Ack for an artifact this relay did not offer", metadata: [
                                "agent": "\(agent.name)", "source": "\(ack.source)", "revision": "\(ack.revision)", "digest": "\(ack.digest)"])
                            throw RPCError(code: .invalidArgument,
                                           message: "Ack for \(ack.source) \(ack.revision) \(ack.digest), which this relay did not offer to agent \(agent.name)")
                        }
                        try registryFailure.run("record the delivery") {
                            try registry.recordDelivery(agent: agent.name, source: ack.source, revision: ack.revision, digest: ack.digest)
                        }
                        RelayMetrics.deliveries.increment()
                        if let packaged = try? registry.digestBelongs(ack.digest, toAnyOf: [ack.source]) {
                            RelayMetrics.deliveryLatency.recordNanoseconds(Int64(max(0, Date().timeIntervalSince(packaged.createdAt)) * 1e9))
                        }
                        logger.info("delivered", metadata: ["agent": "\(agent.name)", "source": "\(ack.source)",
                                                            "revision": "\(ack.revision)"])
                    case .reauthenticate(let reauth)?:
                        let hash = TokenHash.sha256Hex(reauth.token.trimmingCharacters(in: .whitespacesAndNewlines))
                        guard (try? registry.tokenIsValid(hash, agent: agent.name)) == true else {
                            logger.warning("refused: reauthentication with a token that is not this agent's", metadata: ["agent": "\(agent.name)"])
                            throw RPCError(code: .unauthenticated, message: "the new token is not valid for agent \(agent.name)")
                        }
                        sessionToken = hash
                        logger.info("agent switched to its new token", metadata: ["agent": "\(agent.name)"])
                    case .status(let batch)?:
                        guard welcomed, let last = batch.entries.last else { break }
                        // Stored first, then acknowledged: the agent deletes only what is durable here.
                        let stored: [StatusRecord]
                        do { stored = try await registry.storeStatus(agent: agent.name, journal: batch.journalID, entries: batch.entries) } catch {
                            throw registryFailure.rpcError(error, while: "store the agent's status")
                        }
                        try await writer.write(.with { $0.statusAck = .with {
                            $0.journalID = batch.journalID
                            $0.upTo = last.sequence
                        } })
                        statusFeed.publish(stored)
                        RelayMetrics.statusEntries.increment(by: stored.count)
                        if let gap = stored.first(where: { $0.type == "gap" })?.gap {
                            logger.warning("agent's status journal overflowed; entries were lost", metadata: [
                                "agent": "\(agent.name)", "first": "\(gap.first)", "last": "\(gap.last)"])
                        }
                    case nil:
                        continue  // a newer agent's message kind: ignore
                    }
                    if !welcomed {
                        throw RPCError(code: .failedPrecondition, message: "the first message on Connect must be Hello")
                    }
                case .hub(let tunnelEvent):
                    // A drain goes out at once (even before Hello: that session is not wanted).
                    if welcomed || tunnelEvent.isDrain {
                        if try await send(tunnelEvent, to: writer, offered: &offered) { return }
                    } else {
                        pendingState = tunnelEvent
                    }
                }
            }
        }
    }

    /// Writes a hub event (a desired state's artifacts join `offered`); returns true when the
    /// connection should end (drain).
    private func send(_ event: TunnelEvent, to writer: RPCWriter<Relay_V1_RelayMessage>,
                      offered: inout Set<OfferedArtifact>) async throws -> Bool {
        switch event {
        case .desiredState(let generation, let artifacts):
            offered.formUnion(artifacts.map(OfferedArtifact.init))
            try await writer.write(.with {
                $0.desiredState = .with {
                    $0.generation = generation
                    $0.artifacts = artifacts.map(wireArtifact)
                }
            })
            return false
        case .drain(let retryAfter, let reason, let redirect):
            try await writer.write(.with { $0.drain = .with {
                $0.retryAfterMs = UInt32(retryAfter.milliseconds)
                $0.reason = reason
                $0.redirect = redirect
            } })
            return true
        }
    }

    /// A DesiredState entry: the artifact's description, and the relay's signature of the
    /// OCI manifest the agent will serve for exactly that description.
    private func wireArtifact(_ artifact: PackagedArtifact) -> Relay_V1_Artifact {
        let manifest = RelaySigner.manifest(for: artifact)
        let signature = signer.signature(for: manifest, source: artifact.source)
        var wire = Relay_V1_Artifact.with {
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
        }
        faults.apply(toSignatureOf: &wire)
        return wire
    }

    private func checkVersion(_ text: String) throws {
        guard let version = ProtocolVersion(text) else {
            throw RPCError(code: .invalidArgument, message: "Hello.protocol_version '\(text)' is not <major>.<minor>")
        }
        guard version.isCompatible(with: .current) else {
            throw RPCError(code: .failedPrecondition,
                           message: "this relay speaks protocol \(ProtocolVersion.current); the agent speaks \(version): "
                               + "upgrade the \(version < .current ? "agent" : "relay")")
        }
    }

    // MARK: Fetch

    func fetch(request: ServerRequest<Relay_V1_FetchRequest>,
               context: ServerContext) async throws -> StreamingServerResponse<Relay_V1_FetchChunk> {
        let agent = try authenticate(request.metadata, context: context, call: "Fetch").identity
        let digest = request.message.digest
        guard digest.hasPrefix("sha256:"), digest.count == 71 else {
            throw RPCError(code: .invalidArgument, message: "digest must be sha256:<64 hex>")
        }
        let granted = try registryFailure.run("read the agent's grants") { try registry.digestBelongs(digest, toAnyOf: Array(agent.sources)) }
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
        let limit = limits.maxConcurrentFetches
        let busy = RPCError(code: .resourceExhausted, message: "agent \(agent.name) already has \(limit) fetches running")
        guard fetches.inUse(agent.name) < limit else { throw busy }  // the common case, answered before any response
        let chunkSize = limits.maxChunkBytes
        // The slot and the file belong to the response body: whatever ends it gives them back,
        // and a body gRPC never runs (the client was gone first) holds neither.
        return StreamingServerResponse { writer in
            guard fetches.acquire(agent.name, limit: limit) else { throw busy }
            defer { fetches.release(agent.name) }
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw RPCError(code: .notFound, message: "artifact \(digest) is no longer stored on the relay; it will be re-packed")
            }
            defer { try? handle.close() }
            do {
                try handle.seek(toOffset: offset)
                var position = offset
                while position < artifact.size {
                    let count = Int(min(UInt64(chunkSize), artifact.size - position))
                    guard let data = try handle.read(upToCount: count), data.count == count else {
                        throw RPCError(code: .dataLoss, message: "artifact \(digest) is shorter on disk than recorded")
                    }
                    var chunk = Relay_V1_FetchChunk()
                    chunk.offset = position
                    chunk.totalSize = artifact.size
                    chunk.chunkSha256 = chunkHashes.hash(of: data, digest: digest, offset: position, chunkSize: chunkSize)
                    chunk.data = faults.apply(to: data)
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
