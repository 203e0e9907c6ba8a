import Foundation
import GRPCCore
import Logging
import RelayShared
import Wire

/// One agent's `Connect` stream: a short loop over its events, one handler per kind.
///
/// The session owns the writer. Its events come from one reader task (the agent's messages)
/// and from the relay-wide watchers, which need no task or timer of the session's own: the
/// hub leaves desired states in its mailbox, `LiveSessions` sweeps for silent peers, and
/// `AccessDirectory` pushes revocations. (It used to take three tasks, a timer and a SQLite
/// query per tick per connection.)
struct TunnelSession: Sendable {
    let service: TunnelService
    let agent: AgentIdentity
    let live: LiveSession
    /// The session's place in the hub (what `claim` names).
    let subscription: UUID
    let writer: RPCWriter<Relay_V1_RelayMessage>

    private var welcomed = false
    /// False for an agent older than protocol 1.1: Helm chart and OCI artifact sources are
    /// withheld from it (it would serve them as Git tarballs).
    private var takesOCIArtifacts = true
    /// A hub event that arrived before Hello (sent right after the Welcome).
    private var pendingState: TunnelEvent?
    /// Every artifact a DesiredState on this connection offered: what an Ack may name.
    private var offered = Set<OfferedArtifact>()
    private var presence: SessionPresence

    /// Whether the loop goes on after an event.
    enum Next { case proceed, end }

    init(service: TunnelService, agent: AgentIdentity, live: LiveSession, subscription: UUID,
         writer: RPCWriter<Relay_V1_RelayMessage>) {
        self.service = service
        self.agent = agent
        self.live = live
        self.subscription = subscription
        self.writer = writer
        presence = SessionPresence(agent: agent.name, presence: service.presence, logger: service.logger)
    }

    var logger: Logger { service.logger }

    /// Each event is handled in a child task of its own. A task keeps the slabs of its deepest
    /// call for as long as it lives (Swift's task allocator gives them back only when the task
    /// ends), and this loop lives as long as the connection: handled in place, the Hello path
    /// (registry, hub, the Welcome's write) and the first handlers' writes left ~9 KiB per idle
    /// agent (heaptrack, 2,000 agents). The child gets a copy of the session and hands back its
    /// state, whether or not the handler threw.
    mutating func run() async throws {
        defer { presence.ended() }
        for await event in live.events {
            let (outcome, session) = await Self.handleInChildTask(self, event)
            self = session
            if try outcome.get() == .end { return }
        }
    }

    private static func handleInChildTask(_ session: TunnelSession, _ event: SessionEvent) async -> (Result<Next, any Error>, TunnelSession) {
        await withTaskGroup(of: (Result<Next, any Error>, TunnelSession).self) { group in
            group.addTask {
                var session = session
                do {
                    let next = try await session.handle(event)
                    return (.success(next), session)
                } catch {
                    return (.failure(error), session)
                }
            }
            return await group.next() ?? (.success(.end), session)
        }
    }

    private mutating func handle(_ event: SessionEvent) async throws -> Next {
        switch event {
        case .closed: return .end
        case .silent: throw silence()
        case .revoked: return try await revoked()
        case .regranted: return try await regranted()
        case .hub: return try await deliverMail()
        case .message(let message):
            live.heard()
            let next = try await handle(message)
            if !welcomed { throw RPCError(code: .failedPrecondition, message: "the first message on Connect must be Hello") }
            return next
        }
    }

    private mutating func handle(_ message: Relay_V1_AgentMessage) async throws -> Next {
        switch message.kind {
        case .hello(let hello)?: return try await handleHello(hello)
        case .heartbeat(let beat)?: try await handleHeartbeat(beat)
        case .ack(let ack)?: try await handleAck(ack)
        case .reauthenticate(let reauth)?: try await handleReauthenticate(reauth)
        case .status(let batch)?: try await handleStatus(batch)
        case nil: break  // a newer agent's message kind: ignore
        }
        return .proceed
    }

    // MARK: Watchers

    private func silence() -> RPCError {
        let interval = service.limits.heartbeatInterval
        logger.warning("agent silent for two heartbeat intervals; closing", metadata: ["agent": "\(agent.name)"])
        return RPCError(code: .deadlineExceeded, message: "no heartbeat for \(interval * 2)")
    }

    private func revoked() async throws -> Next {
        // The push can be stale (a token revoked and restored): ask once more.
        guard try await !service.access.isValid(live.token, agent: agent.name) else { return .proceed }
        logger.warning("agent's token was revoked; ending its session", metadata: ["agent": "\(agent.name)"])
        try await writer.write(.with { $0.drain = .with {
            $0.retryAfterMs = 0
            $0.reason = "token revoked: reconnect with the agent's current token"
        } })
        return .end
    }

    /// The agent's grants changed: it is sent away to come back at once, so its next session
    /// covers what it may have now (an ungranted source is no longer offered or served).
    private func regranted() async throws -> Next {
        let now = (try? await service.access.current().identities[live.token]?.sources) ?? []
        guard now != live.sources else { return .proceed }
        logger.notice("agent's grants changed; it reconnects to get them", metadata: [
            "agent": "\(agent.name)", "sources": "\(now.sorted())"])
        try await writer.write(.with { $0.drain = .with {
            $0.retryAfterMs = 100
            $0.reason = "the agent's grants changed (now: \(now.sorted().joined(separator: ", "))): reconnect"
        } })
        return .end
    }

    /// A drain goes out at once (even before Hello: that session is not wanted); a desired
    /// state waits for the Welcome.
    private mutating func deliverMail() async throws -> Next {
        for event in live.takeMail() {
            if welcomed || event.isDrain {
                if try await send(event) == .end { return .end }
            } else {
                pendingState = event
            }
        }
        return .proceed
    }

    // MARK: Messages

    private mutating func handleHello(_ hello: Relay_V1_Hello) async throws -> Next {
        guard !welcomed else { throw RPCError(code: .failedPrecondition, message: "a second Hello on one Connect stream") }
        try Self.checkVersion(hello.protocolVersion)
        takesOCIArtifacts = ProtocolVersion(hello.protocolVersion).map { $0 >= .ociArtifacts } ?? false
        try await presence.started(version: hello.agentVersion, held: hello.heldDigests.count)
        await recordHeld(hello.heldDigests)
        // An agent that PINGs at the transport needs no Heartbeat messages: the sweep goes by
        // the bytes its connection receives instead (`TunnelKeepalive`, `ConnectionClocks`).
        let keepalive = hello.transportKeepalive && !service.faults.legacyKeepalive && live.watchByTransport()
        if keepalive {
            RelayMetrics.sessionsByLiveness.transport.increment()
        } else {
            RelayMetrics.sessionsByLiveness.heartbeat.increment()
        }
        // One session per agent: this one replaces any other (which is drained).
        let superseded = await service.hub.claim(subscription)
        if superseded > 0 {
            RelayMetrics.sessionsSuperseded.increment(by: superseded)
            logger.warning("a newer session replaced the agent's other session; the older one is drained", metadata: [
                "agent": "\(agent.name)", "drained": "\(superseded)"])
        }
        let limits = service.limits
        try await writer.write(.with {
            $0.welcome = .with {
                $0.protocolVersion = ProtocolVersion.current.description
                $0.relayVersion = TunnelService.relayVersion
                $0.agentName = agent.name
                $0.heartbeatIntervalMs = UInt32(limits.heartbeatInterval.milliseconds)
                $0.transportKeepalive = keepalive
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
            return try await send(pending)
        }
        return .proceed
    }

    private func handleHeartbeat(_ beat: Relay_V1_Heartbeat) async throws {
        RelayMetrics.heartbeatMessages.increment()
        guard !beat.reply else { return }
        try await writer.write(.with { $0.heartbeat = .with {
            $0.sequence = beat.sequence
            $0.sentUnixNanos = beat.sentUnixNanos
            $0.reply = true
        } })
    }

    /// Only after Hello, and only for what this relay offered (on this connection, or as the
    /// source's current revision): nothing else is stored.
    private func handleAck(_ ack: Relay_V1_Ack) async throws {
        guard welcomed else {
            throw RPCError(code: .failedPrecondition, message: "Ack before Hello: the first message on Connect must be Hello")
        }
        let acked = OfferedArtifact(source: ack.source, revision: ack.revision, digest: ack.digest)
        let current = agent.sources.contains(ack.source) ? await service.hub.artifact(forSource: ack.source) : nil
        guard offered.contains(acked) || current.map(OfferedArtifact.init) == acked else {
            logger.warning("refused: Ack for an artifact this relay did not offer", metadata: [
                "agent": "\(agent.name)", "source": "\(ack.source)", "revision": "\(ack.revision)", "digest": "\(ack.digest)"])
            throw RPCError(code: .invalidArgument,
                           message: "Ack for \(ack.source) \(ack.revision) \(ack.digest), which this relay did not offer to agent \(agent.name)")
        }
        let name = agent.name, now = Registry.milliseconds(Date())
        do {
            try await service.commits.write { db in
                try Registry.insertDelivery(db, agent: name, source: ack.source, revision: ack.revision, digest: ack.digest, at: now)
            }
        } catch {
            throw service.registryFailure.rpcError(error, while: "record the delivery")
        }
        RelayMetrics.deliveries.increment()
        let packaged: PackagedArtifact? = if let current, current.digest == ack.digest { current } else {
            try? await service.registry.artifact(digest: ack.digest, amongSources: [ack.source])
        }
        if let packaged {
            RelayMetrics.deliveryLatency.recordNanoseconds(Int64(max(0, Date().timeIntervalSince(packaged.createdAt)) * 1e9))
        }
        logger.info("delivered", metadata: ["agent": "\(agent.name)", "source": "\(ack.source)", "revision": "\(ack.revision)"])
    }

    /// The current artifacts the agent says it holds are recorded as delivered: an Ack lost
    /// with a relay that died before committing it (kill -9 of a replica) is not lost. Queued
    /// with the group commit, not waited for; rows already there are left alone.
    private func recordHeld(_ digests: [String]) async {
        guard !digests.isEmpty else { return }
        let held = Set(digests)
        var current: [PackagedArtifact] = []
        for source in agent.sources {
            if let artifact = await service.hub.artifact(forSource: source), held.contains(artifact.digest) { current.append(artifact) }
        }
        guard !current.isEmpty else { return }
        let name = agent.name, now = Registry.milliseconds(Date()), recorded = current
        service.commits.post { db in
            for artifact in recorded {
                try Registry.insertDelivery(db, agent: name, source: artifact.source, revision: artifact.revision, digest: artifact.digest, at: now)
            }
        }
    }

    private func handleReauthenticate(_ reauth: Relay_V1_Reauthenticate) async throws {
        let hash = TokenHash.sha256Hex(reauth.token.trimmingCharacters(in: .whitespacesAndNewlines))
        guard (try? await service.access.isValid(hash, agent: agent.name)) == true else {
            logger.warning("refused: reauthentication with a token that is not this agent's", metadata: ["agent": "\(agent.name)"])
            throw RPCError(code: .unauthenticated, message: "the new token is not valid for agent \(agent.name)")
        }
        live.switchToken(hash)
        logger.info("agent switched to its new token", metadata: ["agent": "\(agent.name)"])
    }

    /// Stored first, then acknowledged: the agent deletes only what is durable here.
    private func handleStatus(_ batch: Relay_V1_StatusBatch) async throws {
        guard welcomed, let last = batch.entries.last else { return }
        let stored: [StatusRecord]
        do {
            stored = try await service.registry.storeStatus(agent: agent.name, journal: batch.journalID, entries: batch.entries,
                                                            commits: service.commits)
        } catch {
            throw service.registryFailure.rpcError(error, while: "store the agent's status")
        }
        // Stored is stored: published and counted before the acknowledgement, which can fail
        // with the connection (the agent sends the batch again; it is not stored twice, and
        // it was not counted either).
        service.statusFeed.publish(stored)
        RelayMetrics.statusEntries.increment(by: stored.count)
        try await writer.write(.with { $0.statusAck = .with {
            $0.journalID = batch.journalID
            $0.upTo = last.sequence
        } })
        if let gap = stored.first(where: { $0.type == "gap" })?.gap {
            logger.warning("agent's status journal overflowed; entries were lost", metadata: [
                "agent": "\(agent.name)", "first": "\(gap.first)", "last": "\(gap.last)"])
        }
    }

    // MARK: Sending

    /// Writes a hub event (a desired state's artifacts join `offered`); a drain ends the session.
    private mutating func send(_ event: TunnelEvent) async throws -> Next {
        switch event {
        case .desiredState(let generation, var artifacts):
            if !takesOCIArtifacts, artifacts.contains(where: { $0.oci != nil }) {
                logger.warning("withholding Helm chart and OCI artifact sources from an agent older than protocol \(ProtocolVersion.ociArtifacts); upgrade relay-agent", metadata: [
                    "agent": "\(agent.name)", "sources": "\(artifacts.filter { $0.oci != nil }.map(\.source))"])
                artifacts.removeAll { $0.oci != nil }
            }
            offered.formUnion(artifacts.map(OfferedArtifact.init))
            try await writer.write(.with {
                $0.desiredState = .with {
                    $0.generation = generation
                    $0.artifacts = artifacts.map(service.wireArtifact)
                }
            })
            return .proceed
        case .drain(let retryAfter, let reason, let redirect):
            try await writer.write(.with { $0.drain = .with {
                $0.retryAfterMs = UInt32(clamping: retryAfter.milliseconds)
                $0.reason = reason
                $0.redirect = redirect
            } })
            return .end
        }
    }

    static func checkVersion(_ text: String) throws {
        guard let version = ProtocolVersion(text) else {
            throw RPCError(code: .invalidArgument, message: "Hello.protocol_version '\(text)' is not <major>.<minor>")
        }
        guard version.isCompatible(with: .current) else {
            throw RPCError(code: .failedPrecondition,
                           message: "this relay speaks protocol \(ProtocolVersion.current); the agent speaks \(version): "
                               + "upgrade the \(version < .current ? "agent" : "relay")")
        }
    }
}
