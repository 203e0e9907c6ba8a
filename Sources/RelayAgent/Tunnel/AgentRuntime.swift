import ArtifactMirror
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import RelayShared
import Synchronization
import Wire

/// relay-agent's main loop: dial the relay, keep one `Connect` stream per session, fetch
/// what the desired state lists and the store lacks, acknowledge what was published, and
/// reconnect with jittered exponential backoff (or after the relay's drain delay).
public final class AgentRuntime: Sendable {
    public static let agentVersion = "relay-agent/0.2"

    let config: ResolvedAgentConfig
    let store: ArtifactStore
    let fetcher: ArtifactFetcher
    /// The relay's signatures: required with `trust`, stored (and served to Flux) always.
    public let signatureCheck: RelaySignatureCheck
    let logger: Logger
    /// Every artifact made current (fetched, re-recorded or rolled back to) is announced here.
    public let publications = Publications()
    /// Set while a session runs: another pass over its desired state, at once.
    private let storePass = Mutex<(@Sendable () -> Void)?>(nil)
    let fetchFailures = FetchFailures()
    /// Reported to the relay's timeline through the status journal.
    var incidents: AgentIncidents { AgentIncidents(journal: { [weak self] in try? self?.journal() }, logger: logger) }
    /// Flux status changes waiting to reach the relay: opened (and locked) by the first use,
    /// so `relay-agent list` and `fetch` never touch a running agent's journal.
    private let journalStorage = Mutex<StatusJournal?>(nil)
    /// How long a new connection waits for its Welcome (TCP, TLS, HTTP/2, Hello). A relay that
    /// a whole fleet reconnects to queues their handshakes; an agent that gave up after two
    /// default intervals (10 s, the rule until then) went back to the end of the queue and left
    /// the relay a handshake done for nothing: 10,000 agents after a kill -9 of the relay
    /// abandoned 42,368 sessions that way and took 127 s to return (fleet_bench phase d).
    static let welcomePatience = Duration.seconds(30)

    /// How often the next connection PINGs the relay (`TunnelKeepalive` on the relay): the
    /// interval the relay's last Welcome named when it agreed to transport keepalive, the
    /// relay's default before any Welcome, nil once a relay did not agree (one from before
    /// transport keepalive answers PINGs more often than every 5 minutes with a GOAWAY).
    private let relayPings = Mutex<Duration?>(.seconds(5))
    public func journal() throws -> StatusJournal {
        try journalStorage.withLock { stored in
            if let stored { return stored }
            let opened = try StatusJournal(directory: config.dataDirectory.appendingPathComponent("journal"), maxBytes: config.journalMaxBytes)
            stored = opened
            return opened
        }
    }

    public init(config: ResolvedAgentConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        store = try ArtifactStore(root: config.dataDirectory.appendingPathComponent("store"), retention: config.keep,
                                  replacedGrace: Double(config.keepReplacedFor.milliseconds) / 1000)
        signatureCheck = try RelaySignatureCheck(config: config)
        fetcher = ArtifactFetcher(store: store, partialDirectory: config.dataDirectory.appendingPathComponent("partial"),
                                  signatureCheck: signatureCheck, logger: logger)
    }

    /// Deletes temporary files a killed agent left in its store (see
    /// `ArtifactStore.removeOrphanedTemporaryFiles`). Partial downloads (`partial/`) stay:
    /// the next fetch of the same digest resumes from them.
    @discardableResult
    public func removeOrphanedTemporaryFiles() -> Int { store.removeOrphanedTemporaryFiles() }

    /// Re-verifies every published artifact (digest and Flux rules); a damaged one is removed
    /// so it is fetched again.
    public func verifyStore() throws {
        var seen = Set<String>()
        for record in try store.allRecords() where seen.insert(record.digest).inserted {
            // A file quarantined (or lost) since: nothing to check, the tunnel fetches it again.
            guard FileManager.default.fileExists(atPath: store.path(forDigest: record.digest).path) else { continue }
            let report = try TarballVerifier(expectedDigest: record.digest).verify(file: store.path(forDigest: record.digest).path)
            if !report.ok {
                logger.error("published artifact failed re-verification; removing it",
                             metadata: ["digest": "\(record.digest)", "errors": "\(report.errors)"])
                try store.remove(digest: record.digest)
            }
        }
    }

    /// Where the Flux endpoint sends a stored file it found not to match its digest: the
    /// running session fetches it again at once (a later one would too: a record whose file
    /// is missing does not count as held).
    public func quarantine() -> ArtifactQuarantine {
        ArtifactQuarantine(store: store, directory: config.dataDirectory.appendingPathComponent("quarantine"),
                           reporter: incidents) { [weak self] in self?.storePass.withLock { $0 }?() }
    }

    /// Runs sessions until cancelled, on the relays `RelayRotation` picks: a drain that names
    /// another relay sends the next session there (and back to a configured relay if that one
    /// cannot be reached); with `relays`, a failed session or a drain moves to the next replica.
    public func run() async {
        guard config.link != nil else {
            // Offline: no tunnel; artifacts arrive in bundles. Wait for the stop.
            logger.notice("no relay configured: offline mode, artifacts come only from bundles",
                          metadata: ["inbox": "\(config.inboxDirectory.path)"])
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            return
        }
        var backoff = Backoff(initial: config.reconnectInitial, maximum: config.reconnectMax)
        var rotation = RelayRotation(relays: config.relays)
        // A connection that ended is closed in the background (see `session`): the next one
        // does not wait for a dead relay's TLS shutdown.
        await withDiscardingTaskGroup { teardowns in
            while !Task.isCancelled {
                let started = ContinuousClock.now
                let target = rotation.target
                let outcome = await session(target: target, teardowns: &teardowns)
                if Task.isCancelled { break }  // stopping: not a failure to count or log
                let delay: Duration
                switch outcome {
                case .drained(let retryAfter, let redirect):
                    backoff.reset()
                    delay = retryAfter
                    if rotation.drained(redirect: redirect) { AgentMetrics.relaySwitches.increment() }
                    logger.info("relay asked to reconnect later", metadata: [
                        "after_ms": "\(retryAfter.milliseconds)", "to": "\(rotation.target)"])
                case .reconnect:
                    delay = .zero
                case .failed(let failure, let welcomed):
                    if welcomed && ContinuousClock.now - started > .seconds(10) { backoff.reset() }
                    delay = backoff.next()
                    let wasRedirected = rotation.isRedirected
                    if rotation.failed(welcomed: welcomed) {
                        AgentMetrics.relaySwitches.increment()
                        if wasRedirected {
                            logger.warning("the relay we were sent to is unreachable; going back to the configured one",
                                           metadata: ["redirect": "\(target)", "relay": "\(rotation.target)"])
                        }
                    }
                    failure.count()
                    logger.warning("tunnel down; reconnecting", metadata: [
                        "reason": "\(failure.reason.rawValue)", "error": "\(failure.message)", "in_ms": "\(delay.milliseconds)",
                        "relay": "\(target)", "next": "\(rotation.target)"])
                }
                try? await Task.sleep(for: delay)
            }
        }
    }

    enum Outcome {
        case drained(Duration, redirect: HostPort?)
        case failed(TunnelFailure, welcomed: Bool)
        /// The agent ended the session to open another to the same relay at once.
        case reconnect
    }

    /// One connection: returns as soon as its session is over. Closing the connection goes on
    /// in `teardowns`: grpc-swift waits for the transport to shut down, and a TLS connection
    /// to a relay that froze waits for a close_notify that never comes (measured: a failover
    /// to the next relay took 5 s instead of 1).
    func session(target: HostPort, teardowns: inout DiscardingTaskGroup) async -> Outcome {
        let (outcomes, report) = AsyncStream.makeStream(of: Outcome.self, bufferingPolicy: .bufferingOldest(1))
        teardowns.addTask {
            let outcome = await self.connection(target: target, report: report)
            report.yield(outcome)  // kept only if the session did not report first
            report.finish()
        }
        for await outcome in outcomes { return outcome }
        return .failed(TunnelFailure(reason: .connectionLost, message: "the agent is stopping"), welcomed: false)
    }

    /// The connection's whole life; `report` hears the session's outcome when it is known,
    /// before the connection is closed.
    private func connection(target: HostPort, report: AsyncStream<Outcome>.Continuation) async -> Outcome {
        let pingInterval = relayPings.withLock { $0 }
        let state = SessionState(pingInterval: pingInterval)
        let tlsErrors = TLSErrorRecorder()
        // Worked out once, when the session is over (classifying a certificate failure probes
        // the relay, a refusal is counted), and reported before the client shuts down.
        let decided = Mutex<Outcome?>(nil)
        func decide(_ outcome: Outcome) {
            AgentMetrics.connected.record(0)
            decided.withLock { $0 = outcome }
            report.yield(outcome)
        }
        do {
            let transport = try makeTransport(target: target, tlsErrors: tlsErrors, pingInterval: pingInterval)
            try await withGRPCClient(transport: transport) { client in
                let tunnel = Relay_V1_Tunnel.Client(wrapping: client)
                do {
                    try await self.runSession(tunnel: tunnel, state: state)
                } catch {
                    decide(await self.outcome(of: error, state: state, target: target, tlsErrors: tlsErrors))
                    throw error
                }
                decide(self.outcome(ofEnd: state))
            }
        } catch {
            // The session's own error, rethrown (decided above), or a connection that failed
            // before a session ran (transport, TLS).
            if let outcome = decided.withLock({ $0 }) { return outcome }
            return await outcome(of: error, state: state, target: target, tlsErrors: tlsErrors)
        }
        return decided.withLock { $0 } ?? outcome(ofEnd: state)
    }

    private func outcome(of error: any Error, state: SessionState, target: HostPort, tlsErrors: TLSErrorRecorder) async -> Outcome {
        if state.reconnectsHere { return .reconnect }
        if let retry = state.drainDelay { return .drained(retry, redirect: state.redirect) }
        // Refused for now with a hint (the relay is admitting a reconnecting fleet at its
        // own pace): come back exactly then.
        if !state.welcomed, let retry = RetryPushback.delay(of: error) {
            AgentMetrics.sessionsDeferred.increment()
            return .drained(retry, redirect: nil)
        }
        return .failed(await TunnelFailure.classify(error, tlsError: tlsErrors.error, welcomed: state.welcomed,
                                                    relay: target, caFile: config.caFile),
                       welcomed: state.welcomed)
    }

    private func outcome(ofEnd state: SessionState) -> Outcome {
        if state.reconnectsHere { return .reconnect }
        if let retry = state.drainDelay { return .drained(retry, redirect: state.redirect) }
        return .failed(TunnelFailure(reason: state.welcomed ? .connectionLost : .connectionFailed, message: "the relay closed the stream"),
                       welcomed: state.welcomed)
    }

    /// One HTTP/2 connection to the relay, tuned for bulk Fetch streams beside the control
    /// stream. `tlsErrors` learns why a TLS handshake failed (grpc-swift reports only a
    /// connection closed before the HTTP/2 preface). With `pingInterval`, the connection
    /// PINGs the relay that often (transport keepalive).
    func makeTransport(target relay: HostPort? = nil, tlsErrors: TLSErrorRecorder? = nil,
                       pingInterval: Duration? = nil) throws -> HTTP2ClientTransport.Posix {
        let relay = relay ?? config.relay
        return try HTTP2ClientTransport.Posix(
            // The certificate must name what is dialled: a DNS name, or the IP address
            // itself (the dev certificates carry 127.0.0.1 and ::1).
            target: relay.host.contains(":") ? .ipv6(address: relay.host, port: relay.port)
                : relay.host.allSatisfy({ $0.isNumber || $0 == "." })
                    ? .ipv4(address: relay.host, port: relay.port)
                    : .dns(host: relay.host, port: relay.port),
            transportSecurity: transportSecurity(),
            config: .defaults { transport in
                transport.http2.maxFrameSize = 1 << 20
                transport.http2.targetWindowSize = 4 << 20
                transport.connection.flushCoalescing = nil
                transport.backoff.initial = .milliseconds(200)
                // The heartbeat at the transport: a PING every interval, and the connection
                // closed when one goes unanswered for two (a dead relay is left two to three
                // intervals after it was last heard of, as with Heartbeat messages). A relay busy
                // serving a fleet-wide fetch answers late: with one interval, 5,000 agents
                // dropped 4,958 connections and took 57 s instead of 23 (fleet_bench phase f).
                if let interval = pingInterval {
                    transport.connection.keepalive = .init(time: interval, timeout: interval * 2, allowWithoutCalls: true)
                }
                if let tlsErrors { transport.channelDebuggingCallbacks.onCreateTCPConnection = tlsErrors.install(on:) }
            })
    }

    private func transportSecurity() throws -> HTTP2ClientTransport.Posix.TransportSecurity {
        if let cert = config.clientCertificate, let key = config.clientKey {
            return .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) {
                $0.trustRoots = .certificates([.file(path: self.config.caFile, format: .pem)])
            }
        }
        return .tls {
            $0.trustRoots = .certificates([.file(path: self.config.caFile, format: .pem)])
        }
    }

    /// The token in tokenFile now (the one from start-up if the file cannot be read): a
    /// rotated token is used from the next call on.
    func currentToken() -> String {
        (try? TokenHash.readToken(file: config.tokenFile)) ?? config.token
    }

    private var metadata: Metadata { ["authorization": "Bearer \(currentToken())"] }

    private func runSession(tunnel: ArtifactFetcher.Tunnel, state: SessionState) async throws {
        let (outbox, post) = AsyncStream<Relay_V1_AgentMessage>.makeStream()
        let desiredStates = DesiredStates()
        storePass.withLock { $0 = { desiredStates.again() } }
        defer { storePass.withLock { $0 = nil } }
        let held = Set(try store.allRecords().map(\.digest))
        post.yield(.with {
            $0.hello = .with {
                $0.protocolVersion = ProtocolVersion.current.description
                $0.agentVersion = Self.agentVersion
                $0.heldDigests = held.sorted()
                $0.transportKeepalive = true
            }
        })
        let tokenAtStart = currentToken()
        let metadata: Metadata = ["authorization": "Bearer \(tokenAtStart)"]

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Control stream: our outbox up, the relay's messages down.
            group.addTask {
                try await tunnel.connect(metadata: metadata, requestProducer: { writer in
                    for await message in outbox { try await writer.write(message) }
                }, onResponse: { response in
                    for try await message in response.messages {
                        state.heard()
                        switch message.kind {
                        case .welcome(let welcome)?:
                            // agent.yaml's name and the token's agent must agree: bundles and
                            // status are signed for the name, the tunnel serves the token's agent.
                            if let name = self.config.name, welcome.agentName != name {
                                throw AgentNameMismatch(configured: name, relay: welcome.agentName)
                            }
                            state.welcome(welcome)
                            self.relayPings.withLock { $0 = welcome.transportKeepalive ? state.heartbeatInterval : nil }
                            if state.pingInterval != nil, !welcome.transportKeepalive {
                                // A relay from before transport keepalive would GOAWAY this
                                // connection for its PINGs: a new one without them, at once.
                                self.logger.notice("the relay does not take transport keepalive; reconnecting with Heartbeat messages")
                                state.reconnectAtOnce()
                                post.finish()
                                desiredStates.finish()
                                return
                            }
                            AgentMetrics.connected.record(1)
                            self.logger.info("connected to relay", metadata: [
                                "agent": "\(welcome.agentName)", "relay": "\(welcome.relayVersion)",
                                "heartbeat_ms": "\(welcome.heartbeatIntervalMs)"])
                        case .desiredState(let desired)?:
                            desiredStates.received(desired)
                        case .heartbeat(let beat)?:
                            if !beat.reply {
                                post.yield(.with { $0.heartbeat = .with {
                                    $0.sequence = beat.sequence
                                    $0.sentUnixNanos = beat.sentUnixNanos
                                    $0.reply = true
                                } })
                            } else {
                                state.recordRoundTrip(sentUnixNanos: beat.sentUnixNanos)
                            }
                        case .statusAck(let ack)?:
                            if let journal = try? self.journal(), ack.journalID == journal.journalID {
                                do {
                                    try journal.acknowledge(upTo: ack.upTo)
                                    AgentMetrics.journal(journal)
                                } catch {
                                    self.logger.error("cannot record the relay's acknowledgement", metadata: ["error": "\(error)"])
                                }
                            }
                        case .drain(let drain)?:
                            state.drain(after: .milliseconds(Int64(drain.retryAfterMs)),
                                        redirect: drain.redirect.isEmpty ? nil : HostPort(drain.redirect))
                            self.logger.info("relay is draining", metadata: ["reason": "\(drain.reason)"])
                            post.finish()
                            desiredStates.finish()
                            return
                        case nil:
                            continue
                        }
                    }
                })
                post.finish()
                desiredStates.finish()
                throw CancellationError()  // the session is over: stop the other children
            }
            // Heartbeats and the dead-peer watchdog.
            group.addTask {
                var sequence: UInt64 = 0
                var sessionToken = tokenAtStart
                while !Task.isCancelled {
                    // Until the Welcome names the interval, poll briefly (a relay that never
                    // welcomes is given up after `welcomePatience`).
                    let interval = state.heartbeatInterval
                    try await Task.sleep(for: state.welcomed ? interval : .milliseconds(100))
                    // With transport keepalive (the relay agreed in its Welcome) the HTTP/2 PINGs
                    // are the heartbeat, and an unanswered one closes the connection.
                    if !state.welcomed, state.silentFor > Self.welcomePatience {
                        throw RPCError(code: .unavailable, message: "no Welcome from the relay within \(Self.welcomePatience)")
                    }
                    if state.welcomed, !state.transportKeepalive, state.silentFor > interval * 2 {
                        throw RPCError(code: .unavailable, message: "no word from the relay for two heartbeat intervals")
                    }
                    guard state.welcomed else { continue }
                    // A rotated token: prove ourselves with it on this stream, so revoking the
                    // old one does not end the session.
                    let token = self.currentToken()
                    if token != sessionToken {
                        sessionToken = token
                        post.yield(.with { $0.reauthenticate = .with { $0.token = token } })
                        self.logger.info("token file changed; reauthenticating on the open connection")
                    }
                    guard !state.transportKeepalive else { continue }
                    sequence += 1
                    let sentUnixNanos = Int64(Date().timeIntervalSince1970 * 1e9)
                    post.yield(.with { $0.heartbeat = .with {
                        $0.sequence = sequence
                        $0.sentUnixNanos = sentUnixNanos
                    } })
                }
            }
            // Status up: the journal from the first unacknowledged entry, in order.
            group.addTask {
                try await self.sendStatus(state: state, post: post)
            }
            // Reconcile: fetch what the newest desired state lists and the store lacks. What
            // fails (a full disk, an artifact the relay lost) is reported and tried again with
            // backoff; it never ends the session.
            let (retries, retry) = AsyncStream<Duration>.makeStream(bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                var backoff = Backoff(initial: self.config.reconnectInitial, maximum: self.config.reconnectMax)
                for await desired in desiredStates.stream {
                    let failures = try await self.reconcile(desired, limits: state.limits, tunnel: tunnel, metadata: self.metadata, post: post)
                    guard !failures.isEmpty else {
                        backoff.reset()
                        continue
                    }
                    // Refused for now with the relay's retry hint: wait that long, not the
                    // backoff, and it is no failure. Any real failure still backs off.
                    var deferred: [(failure: Failure, hint: Duration)] = []
                    var failed: [Failure] = []
                    for failure in failures {
                        if let hint = FetchPushback.delay(of: failure.error) { deferred.append((failure, hint)) } else { failed.append(failure) }
                    }
                    let hinted = deferred.map(\.hint).max()
                    let delay = failed.isEmpty ? hinted ?? backoff.next() : max(backoff.next(), hinted ?? .zero)
                    for (failure, _) in deferred {
                        FetchPushback.deferred(failure.artifact, retryIn: delay, logger: self.logger)
                    }
                    for failure in failed {
                        self.fetchFailures.failed(failure.artifact, error: failure.error, retryIn: delay, incidents: self.incidents)
                    }
                    retry.yield(delay)
                }
                retry.finish()
            }
            group.addTask {
                for await delay in retries {
                    try await Task.sleep(for: delay)
                    desiredStates.again()
                }
            }
            do {
                try await group.next()
            } catch is CancellationError {
            }
            group.cancelAll()
        }
    }

    typealias Failure = (artifact: Relay_V1_Artifact, error: any Error)

    /// One pass: fetches what `desired` lists and the store lacks (a record whose file is
    /// gone, e.g. quarantined, counts as lacking) and records what it holds under new names.
    /// Returns what failed, for the caller to report and retry; throws only when cancelled.
    private func reconcile(_ desired: Relay_V1_DesiredState, limits: Relay_V1_Limits, tunnel: ArtifactFetcher.Tunnel,
                           metadata: Metadata, post: AsyncStream<Relay_V1_AgentMessage>.Continuation) async throws -> [Failure] {
        let records: [ArtifactRecord]
        do { records = try store.allRecords().filter { store.holdsFile(of: $0) } } catch {
            return desired.artifacts.map { ($0, error) }
        }
        var failures: [Failure] = []
        func key(_ source: String, _ revision: String, _ digest: String) -> String { "\(source)\u{0}\(revision)\u{0}\(digest)" }
        let held = Set(records.map { key($0.source, $0.revision, $0.digest) })
        // The record Flux is served as `latest` for each source: the newest in its index.
        var current: [String: String] = [:]
        for record in records where current[record.source] == nil { current[record.source] = key(record.source, record.revision, record.digest) }
        let heldDigests = Set(records.map(\.digest))
        var missing: [Relay_V1_Artifact] = []
        for artifact in desired.artifacts {
            let wanted = key(artifact.source, artifact.revision, artifact.digest)
            do {
                if held.contains(wanted) {
                    // Held already. If the relay went back to it (a rollback), make it current again.
                    if current[artifact.source] != wanted, let existing = records.first(where: { key($0.source, $0.revision, $0.digest) == wanted }) {
                        // Served as the relay describes (and signed) it now.
                        let described = ArtifactRecord(artifact, files: existing.files)
                        let record = OCIManifest(record: existing) == OCIManifest(record: described) ? existing : described
                        try signatureCheck.admit(record, claimedManifestDigest: artifact.manifestDigest, signature: artifact.cosignSignature,
                             keyID: artifact.signingKeyID)
                        _ = try store.recordExisting(record)
                        publications.announce(record)
                    } else if let existing = records.first(where: { key($0.source, $0.revision, $0.digest) == wanted }),
                              !signatureCheck.holdsValidSignature(for: existing)
                                || (artifact.cosignSignature != nil && !signatureCheck.hasSignature(for: existing)) {
                        // Published before its signature was kept (an upgraded agent), or before
                        // `trust` was set: checked now like a new arrival (a refusal is reported and
                        // the catalog does not serve it), re-recorded as the relay describes it.
                        let described = ArtifactRecord(artifact, files: existing.files)
                        let record = OCIManifest(record: existing) == OCIManifest(record: described) ? existing : described
                        try signatureCheck.admit(record, claimedManifestDigest: artifact.manifestDigest, signature: artifact.cosignSignature,
                                                 keyID: artifact.signingKeyID)
                        if record != existing { _ = try store.recordExisting(record) }
                        publications.announce(record)
                    }
                } else if heldDigests.contains(artifact.digest) {
                    // Same bytes under a new source or revision: no download.
                    let files = records.first { $0.digest == artifact.digest }?.files ?? 0
                    let described = ArtifactRecord(artifact, files: files)
                    try signatureCheck.admit(described, claimedManifestDigest: artifact.manifestDigest, signature: artifact.cosignSignature,
                             keyID: artifact.signingKeyID)
                    if let record = try store.recordExisting(described) { publications.announce(record) }
                    post.yield(Self.ack(artifact))
                } else {
                    missing.append(artifact)
                }
            } catch {
                failures.append((artifact, error))
            }
        }
        let parallel = max(1, Int(limits.maxConcurrentFetches))
        try await withThrowingTaskGroup(of: Failure?.self) { group in
            var running = 0
            for artifact in missing {
                if running >= parallel, let outcome = try await group.next() {
                    running -= 1
                    if let failure = outcome { failures.append(failure) }
                }
                running += 1
                group.addTask {
                    let started = ContinuousClock.now
                    let record: ArtifactRecord
                    do {
                        record = try await self.fetcher.fetch(artifact, limits: limits, tunnel: tunnel, metadata: metadata)
                    } catch {
                        if Task.isCancelled { throw error }  // the session is ending
                        return (artifact, error)
                    }
                    self.fetchFailures.succeeded(artifact.digest)
                    self.publications.announce(record)
                    self.logger.info("published", metadata: [
                        "source": "\(record.source)", "revision": "\(record.revision)", "digest": "\(record.digest)",
                        "size": "\(record.size)", "ms": "\((ContinuousClock.now - started).milliseconds)"])
                    post.yield(Self.ack(artifact))
                    return nil
                }
            }
            for try await outcome in group {
                if let failure = outcome { failures.append(failure) }
            }
        }
        return failures
    }

    /// Streams journal entries up once welcomed; never runs more than `window` entries ahead
    /// of the relay's acknowledgements.
    private func sendStatus(state: SessionState, post: AsyncStream<Relay_V1_AgentMessage>.Continuation,
                            batchSize: Int = 256, window: UInt64 = 8192) async throws {
        while !state.welcomed {
            try await Task.sleep(for: .milliseconds(20))
        }
        let journal = try journal()
        let journalID = journal.journalID
        var sent = journal.acknowledgedSequence
        while !Task.isCancelled {
            let acknowledged = journal.acknowledgedSequence
            sent = max(sent, acknowledged)
            if sent - acknowledged >= window {
                try await Task.sleep(for: .milliseconds(10))
                continue
            }
            let entries = journal.entries(after: sent, limit: batchSize)
            guard let last = entries.last else {
                await journal.waitForEntries(after: sent)
                // Let a burst gather into one batch (one relay transaction) rather than many.
                try await Task.sleep(for: .milliseconds(2))
                continue
            }
            post.yield(.with { $0.status = .with {
                $0.journalID = journalID
                $0.entries = entries
            } })
            sent = last.sequence
        }
    }

    static func ack(_ artifact: Relay_V1_Artifact) -> Relay_V1_AgentMessage {
        .with { $0.ack = .with {
            $0.source = artifact.source
            $0.revision = artifact.revision
            $0.digest = artifact.digest
        } }
    }

    /// Published artifacts, most recently used first per source.
    public func published() throws -> [ArtifactRecord] { try store.allRecords() }
}

/// The relay knows the token as another agent than agent.yaml's `name`.
struct AgentNameMismatch: Error, CustomStringConvertible {
    let configured: String
    let relay: String
    var description: String {
        "agent.yaml names this agent '\(configured)', but the relay knows its token as '\(relay)': fix `name` or `tokenFile` "
            + "(bundles and status bundles are made for the name)"
    }
}

/// What one session knows, shared by its tasks.
final class SessionState: Sendable {
    private struct Values {
        var welcomed = false
        var heartbeatInterval: Duration = .seconds(5)
        var transportKeepalive = false
        var limits = Relay_V1_Limits()
        var lastHeard = ContinuousClock.now
        var drainDelay: Duration?
        var redirect: HostPort?
        var reconnectHere = false
        var lastRoundTrip: Duration?
    }

    private let values = Mutex(Values())
    /// How often this connection's transport PINGs the relay (nil: not at all).
    let pingInterval: Duration?

    init(pingInterval: Duration?) { self.pingInterval = pingInterval }

    var welcomed: Bool { values.withLock { $0.welcomed } }
    var heartbeatInterval: Duration { values.withLock { $0.heartbeatInterval } }
    /// The relay watches this connection by its HTTP/2 PINGs: no Heartbeat messages.
    var transportKeepalive: Bool { values.withLock { $0.transportKeepalive } }
    var limits: Relay_V1_Limits { values.withLock { $0.limits } }
    var drainDelay: Duration? { values.withLock { $0.drainDelay } }
    var redirect: HostPort? { values.withLock { $0.redirect } }
    var silentFor: Duration { ContinuousClock.now - values.withLock { $0.lastHeard } }

    func heard() { values.withLock { $0.lastHeard = ContinuousClock.now } }

    func welcome(_ welcome: Relay_V1_Welcome) {
        values.withLock {
            $0.welcomed = true
            $0.limits = welcome.limits
            if welcome.heartbeatIntervalMs > 0 { $0.heartbeatInterval = .milliseconds(Int64(welcome.heartbeatIntervalMs)) }
            // PINGs at another rate than the relay's interval (it was changed since the last
            // connection) would not keep its promise of two intervals: Heartbeat messages, as
            // before, on this connection; the next one PINGs at the new interval.
            $0.transportKeepalive = welcome.transportKeepalive && $0.heartbeatInterval == pingInterval
        }
    }

    /// The session ends for another at once to the same relay (not a drain: no other relay).
    func reconnectAtOnce() { values.withLock { $0.reconnectHere = true } }
    var reconnectsHere: Bool { values.withLock { $0.reconnectHere } }

    func drain(after delay: Duration, redirect: HostPort? = nil) {
        values.withLock {
            $0.drainDelay = delay
            $0.redirect = redirect
        }
    }

    func recordRoundTrip(sentUnixNanos: Int64) {
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        values.withLock { $0.lastRoundTrip = .nanoseconds(max(0, now - sentUnixNanos)) }
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
