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
    let logger: Logger
    /// Chunk checksums computed when an artifact is packaged (see `ChunkHashCache`).
    let chunkHashes: ChunkHashCache
    /// Where stored status goes live.
    let statusFeed: StatusFeed

    static let relayVersion = "relay-server/0.2"

    private func authenticate(_ metadata: Metadata, call: String) throws -> (identity: AgentIdentity, tokenSHA256: String) {
        let header = metadata[stringValues: "authorization"].first(where: { _ in true })
        guard let agent = authenticator.authenticate(authorization: header) else {
            logger.warning("refused: bad or missing token", metadata: ["call": "\(call)"])
            throw RPCError(code: .unauthenticated,
                           message: "invalid, revoked or missing bearer token: check the agent's tokenFile against the relay's agents (relay.yaml agents[].tokenSHA256, or relay-server agents list)")
        }
        return agent
    }

    // MARK: Connect

    func connect(request: StreamingServerRequest<Relay_V1_AgentMessage>,
                 context: ServerContext) async throws -> StreamingServerResponse<Relay_V1_RelayMessage> {
        let (agent, tokenHash) = try authenticate(request.metadata, call: "Connect")
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
            var state = ConnectionLog(agent: agent.name, logger: logger)
            defer { state.disconnected(registry: registry) }

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
                        try checkVersion(hello.protocolVersion)
                        try registry.agentConnected(agent.name, version: hello.agentVersion)
                        state.connected(version: hello.agentVersion, held: hello.heldDigests.count)
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
                            if try await send(pending, to: writer) { return }
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
                        guard agent.sources.contains(ack.source) else { continue }
                        try registry.recordDelivery(agent: agent.name, source: ack.source, revision: ack.revision, digest: ack.digest)
                        RelayMetrics.deliveries.increment()
                        if let packaged = try registry.digestBelongs(ack.digest, toAnyOf: [ack.source]) {
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
                        let stored = try registry.storeStatus(agent: agent.name, journal: batch.journalID, entries: batch.entries)
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
                    if welcomed {
                        if try await send(tunnelEvent, to: writer) { return }
                    } else {
                        pendingState = tunnelEvent
                    }
                }
            }
        }
    }

    /// Writes a hub event; returns true when the connection should end (drain).
    private func send(_ event: TunnelEvent, to writer: RPCWriter<Relay_V1_RelayMessage>) async throws -> Bool {
        switch event {
        case .desiredState(let generation, let artifacts):
            try await writer.write(.with {
                $0.desiredState = .with {
                    $0.generation = generation
                    $0.artifacts = artifacts.map { artifact in
                        .with {
                            $0.source = artifact.source
                            $0.revision = artifact.revision
                            $0.digest = artifact.digest
                            $0.size = artifact.size
                            $0.commit = artifact.commit
                            $0.origin = artifact.origin
                            $0.createdUnixMs = Int64((artifact.createdAt.timeIntervalSince1970 * 1000).rounded())
                        }
                    }
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
        let agent = try authenticate(request.metadata, call: "Fetch").identity
        let digest = request.message.digest
        guard digest.hasPrefix("sha256:"), digest.count == 71 else {
            throw RPCError(code: .invalidArgument, message: "digest must be sha256:<64 hex>")
        }
        guard let artifact = try registry.digestBelongs(digest, toAnyOf: Array(agent.sources)) else {
            throw RPCError(code: .notFound, message: "no artifact \(digest) among the sources granted to \(agent.name)")
        }
        let path = store.path(forDigest: digest).path
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RPCError(code: .notFound, message: "artifact \(digest) is no longer stored on the relay; it will be re-packed")
        }
        let offset = request.message.offset
        RelayMetrics.fetches.increment()
        if offset > 0 { RelayMetrics.fetchResumes.increment() }
        guard offset <= artifact.size else {
            try? handle.close()
            throw RPCError(code: .outOfRange, message: "offset \(offset) is past the end (\(artifact.size) bytes)")
        }
        guard await fetches.acquire(agent.name, limit: limits.maxConcurrentFetches) else {
            try? handle.close()
            throw RPCError(code: .resourceExhausted,
                           message: "agent \(agent.name) already has \(limits.maxConcurrentFetches) fetches running")
        }
        let chunkSize = limits.maxChunkBytes
        return StreamingServerResponse { writer in
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
                await fetches.release(agent.name)
                logger.info("fetch served", metadata: ["agent": "\(agent.name)", "digest": "\(digest)",
                                                       "offset": "\(offset)", "bytes": "\(position - offset)"])
            } catch {
                await fetches.release(agent.name)
                logger.info("fetch ended early", metadata: ["agent": "\(agent.name)", "digest": "\(digest)",
                                                            "offset": "\(offset)", "error": "\(error)"])
                throw error
            }
            return [:]
        }
    }
}

/// The SHA-256 of every `chunkSize`-aligned chunk of recently packaged artifacts, so a
/// `Fetch` does not hash what it serves (hashing was the largest CPU cost of serving one).
/// `prime` reads an artifact once, computing its chunk checksums and its whole digest, and
/// keeps the checksums only when the digest matches: a cached checksum always describes the
/// bytes the digest names, so a damaged read at serving time is still caught by the agent.
/// Chunks of artifacts not (yet) primed, and chunks at unaligned offsets (a resume after a
/// chunk-size change), are hashed as they are served. 32 bytes per chunk; at most
/// `capacity` artifacts (the oldest primed is dropped).
public final class ChunkHashCache: Sendable {
    private struct Key: Hashable { var digest: String; var chunkSize: Int }
    private struct State { var entries: [Key: [UInt8]] = [:]; var order: [Key] = [] }
    private let state = Mutex(State())
    private let capacity: Int

    public init(capacity: Int = 64) { self.capacity = capacity }

    func hash(of data: Data, digest: String, offset: UInt64, chunkSize: Int) -> Data {
        if chunkSize > 0, offset % UInt64(chunkSize) == 0 {
            let start = Int(offset / UInt64(chunkSize)) * 32
            let cached = state.withLock { state -> Data? in
                guard let hashes = state.entries[Key(digest: digest, chunkSize: chunkSize)],
                      start + 32 <= hashes.count else { return nil }
                return Data(hashes[start ..< start + 32])
            }
            if let cached { return cached }
        }
        return Data(SHA256.hash(data: data))
    }

    /// Computes and keeps the chunk checksums of the artifact at `path` (on a thread of its
    /// own: one read of the file, two SHA-256 passes). Returns whether they were kept.
    @discardableResult
    public func prime(path: String, digest: String, chunkSize: Int) async -> Bool {
        let key = Key(digest: digest, chunkSize: chunkSize)
        if state.withLock({ $0.entries[key] != nil }) { return true }
        let hashes: [UInt8]? = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Self.chunkHashes(path: path, digest: digest, chunkSize: chunkSize)) }
                .start()
        }
        guard let hashes else { return false }
        state.withLock { state in
            if state.entries.updateValue(hashes, forKey: key) == nil {
                state.order.append(key)
                if state.order.count > capacity { state.entries.removeValue(forKey: state.order.removeFirst()) }
            }
        }
        return true
    }

    private static func chunkHashes(path: String, digest: String, chunkSize: Int) -> [UInt8]? {
        guard chunkSize > 0, let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var whole = SHA256()
        var hashes: [UInt8] = []
        while true {
            let read: Data?
            do { read = try handle.read(upToCount: chunkSize) } catch { return nil }
            guard let data = read, !data.isEmpty else { break }  // nil or empty: end of file
            whole.update(data: data)
            hashes.append(contentsOf: SHA256.hash(data: data))
        }
        let actual = "sha256:" + whole.finalize().map { String(format: "%02x", $0) }.joined()
        return actual == digest ? hashes : nil
    }
}

/// Concurrent fetches per agent.
actor FetchLimiter {
    private var running: [String: Int] = [:]

    func acquire(_ agent: String, limit: Int) -> Bool {
        let count = running[agent, default: 0]
        guard count < limit else { return false }
        running[agent] = count + 1
        return true
    }

    func release(_ agent: String) {
        running[agent, default: 1] -= 1
    }
}

/// Connection bookkeeping and logs for one Connect stream.
private struct ConnectionLog {
    let agent: String
    let logger: Logger
    var isConnected = false

    mutating func connected(version: String, held: Int) {
        if !isConnected { RelayMetrics.agentConnected(1) }
        isConnected = true
        logger.info("agent connected", metadata: ["agent": "\(agent)", "version": "\(version)", "held": "\(held)"])
    }

    func disconnected(registry: Registry) {
        guard isConnected else { return }
        RelayMetrics.agentConnected(-1)
        try? registry.agentSeen(agent, connected: false)
        logger.info("agent disconnected", metadata: ["agent": "\(agent)"])
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
