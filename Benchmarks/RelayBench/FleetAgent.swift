// relay-bench fleet: one simulated agent. It speaks the tunnel protocol the way relay-agent
// does (Sources/RelayAgent/Tunnel/AgentRuntime.swift) on its own HTTP/2 + TLS connection,
// but keeps nothing on disk: held artifacts are digests in memory, fetched bytes are hashed
// and dropped.

import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import RelayShared
import Synchronization
import Wire

/// What every simulated agent shares.
struct FleetSettings: Sendable {
    var targets: [HostPort]
    /// The CA bundle, read once (every agent builds its own TLS context from it).
    var caPEM: [UInt8]
    var hostnameVerification: Bool
    var nameFormat: String
    var tokenPrefix: String
    var firstIndex: Int
    /// relay-agent's reconnectInitial / reconnectMax (also its fetch retry backoff).
    var reconnectInitial: Duration
    var reconnectMax: Duration
    /// Offer transport keepalive in Hello (HTTP/2 PINGs instead of Heartbeat messages), as
    /// relay-agent does; false simulates agents that predate it.
    var transportKeepalive: Bool
    /// After a failed session, dial the next address (relay-agent's `relays:`): the targets
    /// are replicas of one relay. Otherwise an agent keeps its one address.
    var failover = false
}

/// Whether a session's status batch awaits its StatusAck.
final class StatusInFlight: Sendable {
    private let flag = Atomic<Bool>(false)
    func set(_ value: Bool) { flag.store(value, ordering: .relaxed) }
    var value: Bool { flag.load(ordering: .relaxed) }
}

/// `status N` at run time: every agent sends N more status entries (events), in batches as
/// relay-agent's uplink does, resending what was not acknowledged after a reconnect.
final class StatusTarget: Sendable {
    private let perAgent = Atomic<Int>(0)
    func add(_ entries: Int) { perAgent.add(entries, ordering: .relaxed) }
    var value: Int { perAgent.load(ordering: .relaxed) }
}

/// Exponential backoff with full jitter, relay-agent's rule: each delay is random in
/// [initial, min(max, initial·2ⁿ)].
struct FleetBackoff: Sendable {
    let initial: Duration
    let maximum: Duration
    private var attempt = 0

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    mutating func next() -> Duration {
        let ceiling = min(maximum, initial * Double(1 << min(attempt, 20)))
        attempt += 1
        let low = initial.seconds, high = max(low, ceiling.seconds)
        return .milliseconds(Int64(Double.random(in: low...high) * 1000))
    }

    mutating func reset() { attempt = 0 }
}

/// `fetch on` / `fetch off` at run time: turning it on makes every live session look at its
/// latest DesiredState again.
final class FetchSwitch: Sendable {
    private struct State {
        var enabled: Bool
        var listeners: [Int: @Sendable () -> Void] = [:]
    }

    private let state: Mutex<State>

    init(enabled: Bool) { state = Mutex(State(enabled: enabled)) }

    var enabled: Bool { state.withLock { $0.enabled } }

    func set(_ enabled: Bool) {
        let wake = state.withLock { state -> [@Sendable () -> Void] in
            defer { state.enabled = enabled }
            return enabled && !state.enabled ? Array(state.listeners.values) : []
        }
        for listener in wake { listener() }
    }

    func listen(slot: Int, _ listener: @escaping @Sendable () -> Void) { state.withLock { $0.listeners[slot] = listener } }
    func stopListening(slot: Int) { _ = state.withLock { $0.listeners.removeValue(forKey: slot) } }
}

/// The relay's `grpc-retry-pushback-ms` on a refused call, if it carries one.
func retryPushback(_ error: any Error) -> Duration? {
    guard let error = error as? RPCError,
          let text = error.metadata[stringValues: "grpc-retry-pushback-ms"].first(where: { _ in true }),
          let milliseconds = Double(text.trimmingCharacters(in: .whitespaces)), milliseconds >= 0 else { return nil }
    return .microseconds(Int64(milliseconds * 1000))
}

private struct WatchdogTimeout: Error, CustomStringConvertible {
    var description: String { "no word from the relay for two heartbeat intervals" }
}

private struct SessionOver: Error {}

/// The DesiredState one session works toward: each new one, and the latest again on demand
/// (a retry, `fetch on`). Only the newest waits.
private final class DesiredStates: Sendable {
    let stream: AsyncStream<Relay_V1_DesiredState>
    private let continuation: AsyncStream<Relay_V1_DesiredState>.Continuation
    private let latest = Mutex<Relay_V1_DesiredState?>(nil)

    init() { (stream, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1)) }

    func received(_ desired: Relay_V1_DesiredState) {
        latest.withLock { $0 = desired }
        continuation.yield(desired)
    }

    func again() {
        if let desired = latest.withLock({ $0 }) { continuation.yield(desired) }
    }

    func finish() { continuation.finish() }
}

/// What one session knows, shared by its tasks.
private final class SessionState: Sendable {
    private struct Values {
        var welcomed = false
        var heartbeatInterval: Duration = .seconds(5)
        var transportKeepalive = false
        var lastHeard = ContinuousClock.now
        var drainDelay: Duration?
        var generation: UInt64?
    }

    private let values = Mutex(Values())
    /// How often this connection's transport PINGs the relay (relay-agent's rule).
    let pingInterval: Duration

    init(pingInterval: Duration) { self.pingInterval = pingInterval }

    var welcomed: Bool { values.withLock { $0.welcomed } }
    var heartbeatInterval: Duration { values.withLock { $0.heartbeatInterval } }
    var transportKeepalive: Bool { values.withLock { $0.transportKeepalive } }
    var drainDelay: Duration? { values.withLock { $0.drainDelay } }
    var silentFor: Duration { ContinuousClock.now - values.withLock { $0.lastHeard } }

    func heard() { values.withLock { $0.lastHeard = ContinuousClock.now } }

    func welcome(_ welcome: Relay_V1_Welcome) {
        values.withLock {
            $0.welcomed = true
            if welcome.heartbeatIntervalMs > 0 { $0.heartbeatInterval = .milliseconds(Int64(welcome.heartbeatIntervalMs)) }
            $0.transportKeepalive = welcome.transportKeepalive && $0.heartbeatInterval == pingInterval
        }
    }

    func drain(after delay: Duration) { values.withLock { $0.drainDelay = delay } }

    /// False for a generation older than one already seen (the agent ignores those).
    func accept(generation: UInt64) -> Bool {
        values.withLock { values in
            if let seen = values.generation, generation < seen { return false }
            values.generation = generation
            return true
        }
    }
}

/// A verified prefix of a download: resumed from here after a failure, as relay-agent resumes
/// from its partial file. (SHA256 is a plain value with no shared storage.)
private struct PartialFetch: @unchecked Sendable {
    var offset: UInt64 = 0
    var total: UInt64 = 0
    var hasher = SHA256()
}

private struct FetchMismatch: Error, CustomStringConvertible {
    var description: String
}

/// One simulated agent: sessions until cancelled, reconnecting as relay-agent does.
final class FleetAgent: Sendable {
    private struct Memory {
        /// Verified artifacts (sent in Hello).
        var held: Set<String> = []
        /// Digests seen in any DesiredState (each counted once as received).
        var seen: Set<String> = []
        /// source, revision, digest already acknowledged.
        var acked: Set<String> = []
        var partial: [String: PartialFetch] = [:]
        /// Status entries the relay acknowledged (sequences 1…statusAcked).
        var statusAcked: UInt64 = 0
    }

    let slot: Int
    let name: String
    private let metadata: Metadata
    private let settings: FleetSettings
    private let tally: FleetTally
    private let fetchSwitch: FetchSwitch
    private let memory = Mutex(Memory())
    /// The interval the relay's last Welcome named: the next connection PINGs at it. (relay-agent
    /// also stops PINGing for good when a Welcome does not agree, which a relay from before
    /// transport keepalive does; the harness only ever meets the relay it is built with.)
    private let relayHeartbeat = Mutex<Duration>(.seconds(5))

    private enum Outcome {
        case drained(Duration)
        case refused(Duration)
        case failed(SessionEnd, welcomed: Bool)
    }

    private let statusTarget: StatusTarget

    init(slot: Int, settings: FleetSettings, tally: FleetTally, fetchSwitch: FetchSwitch, statusTarget: StatusTarget = StatusTarget()) {
        self.statusTarget = statusTarget
        self.slot = slot
        let index = settings.firstIndex + slot
        name = String(format: settings.nameFormat, index)
        metadata = ["authorization": "Bearer \(settings.tokenPrefix)\(index)"]
        self.settings = settings
        self.tally = tally
        self.fetchSwitch = fetchSwitch
    }

    /// Sessions until cancelled; round-robin: agent slot k dials address k mod count (with
    /// `failover`, the next one after each failed session).
    func run() async {
        tally.agentStarted()
        var offset = 0
        var backoff = FleetBackoff(initial: settings.reconnectInitial, maximum: settings.reconnectMax)
        while !Task.isCancelled {
            let target = settings.targets[(slot + offset) % settings.targets.count]
            let started = ContinuousClock.now
            let delay: Duration
            switch await session(target: target) {
            case .drained(let after):
                backoff.reset()
                delay = after
            case .refused(let after):
                delay = after
            case .failed(_, let welcomed):
                if welcomed && ContinuousClock.now - started > .seconds(10) { backoff.reset() }
                delay = backoff.next()
                if settings.failover { offset += 1 }
            }
            try? await Task.sleep(for: delay)
        }
    }

    private func session(target: HostPort) async -> Outcome {
        let pingInterval = relayHeartbeat.withLock { $0 }
        let state = SessionState(pingInterval: pingInterval)
        tally.sessionStarted()
        let outcome: Outcome
        var errorText: String?
        do {
            let transport = try makeTransport(target: target, pingInterval: pingInterval)
            try await withGRPCClient(transport: transport) { client in
                try await self.runSession(tunnel: Relay_V1_Tunnel.Client(wrapping: client), state: state)
            }
            if let retry = state.drainDelay { outcome = .drained(retry) } else { outcome = .failed(.closed, welcomed: state.welcomed) }
        } catch {
            if let retry = state.drainDelay {
                outcome = .drained(retry)
            } else if !state.welcomed, let pushback = retryPushback(error) {
                outcome = .refused(pushback)
            } else {
                outcome = .failed(error is WatchdogTimeout ? .watchdog : .error, welcomed: state.welcomed)
                errorText = String(String(describing: error).prefix(160))
            }
        }
        switch outcome {
        case .drained: tally.sessionEnded(.drain, welcomed: state.welcomed)
        case .refused: tally.sessionEnded(.refused, welcomed: state.welcomed)
        case .failed(let reason, let welcomed): tally.sessionEnded(reason, welcomed: welcomed, error: reason == .error ? errorText : nil)
        }
        return outcome
    }

    /// relay-agent's transport (AgentRuntime.makeTransport), TCP connections counted.
    private func makeTransport(target: HostPort, pingInterval: Duration) throws -> HTTP2ClientTransport.Posix {
        let ca = settings.caPEM, verifyHostname = settings.hostnameVerification, tally = self.tally
        let keepalive = settings.transportKeepalive ? pingInterval : nil
        return try HTTP2ClientTransport.Posix(
            target: target.host.contains(":") ? .ipv6(address: target.host, port: target.port)
                : target.host.allSatisfy({ $0.isNumber || $0 == "." })
                    ? .ipv4(address: target.host, port: target.port)
                    : .dns(host: target.host, port: target.port),
            transportSecurity: .tls {
                $0.trustRoots = .certificates([.bytes(ca, format: .pem)])
                if !verifyHostname { $0.serverCertificateVerification = .noHostnameVerification }
            },
            config: .defaults { transport in
                transport.http2.maxFrameSize = 1 << 20
                transport.http2.targetWindowSize = 4 << 20
                transport.connection.flushCoalescing = nil
                transport.backoff.initial = .milliseconds(200)
                if let keepalive {
                    transport.connection.keepalive = .init(time: keepalive, timeout: keepalive * 2, allowWithoutCalls: true)
                }
                transport.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
                    tally.tcpOpened()
                    channel.closeFuture.whenComplete { _ in tally.tcpClosed() }
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
            })
    }

    private func runSession(tunnel: Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>, state: SessionState) async throws {
        let (outbox, post) = AsyncStream<Relay_V1_AgentMessage>.makeStream()
        let desiredStates = DesiredStates()
        fetchSwitch.listen(slot: slot) { desiredStates.again() }
        defer { fetchSwitch.stopListening(slot: slot) }
        let held = memory.withLock { $0.held.sorted() }
        post.yield(.with {
            $0.hello = .with {
                $0.protocolVersion = ProtocolVersion.current.description
                $0.agentVersion = "relay-bench-fleet/1"
                $0.heldDigests = held
                $0.transportKeepalive = self.settings.transportKeepalive
            }
        })
        let metadata = self.metadata, tally = self.tally, name = self.name, slot = self.slot
        let statusInFlight = StatusInFlight()

        try await withThrowingTaskGroup(of: Void.self) { group in
            // Control stream.
            group.addTask {
                try await tunnel.connect(metadata: metadata, requestProducer: { writer in
                    for await message in outbox { try await writer.write(message) }
                }, onResponse: { response in
                    for try await message in response.messages {
                        state.heard()
                        switch message.kind {
                        case .welcome(let welcome)?:
                            state.welcome(welcome)
                            if welcome.heartbeatIntervalMs > 0 {
                                self.relayHeartbeat.withLock { $0 = .milliseconds(Int64(welcome.heartbeatIntervalMs)) }
                            }
                            tally.welcomed(slot: slot, nameMatches: welcome.agentName == name)
                        case .desiredState(let desired)?:
                            tally.desiredState()
                            guard state.accept(generation: desired.generation) else { continue }
                            self.noteArrival(desired)
                            desiredStates.received(desired)
                        case .heartbeat(let beat)?:
                            if !beat.reply {
                                post.yield(.with { $0.heartbeat = .with {
                                    $0.sequence = beat.sequence
                                    $0.sentUnixNanos = beat.sentUnixNanos
                                    $0.reply = true
                                } })
                                tally.probeAnswered()
                            } else {
                                let now = Int64(Date().timeIntervalSince1970 * 1e9)
                                tally.roundTrip(milliseconds: Double(max(0, now - beat.sentUnixNanos)) / 1e6)
                            }
                        case .statusAck(let ack)?:
                            let newly = self.memory.withLock { memory -> UInt64 in
                                guard ack.upTo > memory.statusAcked else { return 0 }
                                defer { memory.statusAcked = ack.upTo }
                                return ack.upTo - memory.statusAcked
                            }
                            if newly > 0 { tally.statusAcked(Int(newly)) }
                            statusInFlight.set(false)
                        case .drain(let drain)?:
                            state.drain(after: .milliseconds(Int64(drain.retryAfterMs)))
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
                throw SessionOver()
            }
            // Heartbeats and the dead-peer watchdog. Before the Welcome this polls every
            // 500 ms (relay-agent: 100 ms) so a fleet waiting for a slow relay costs little.
            group.addTask {
                var sequence: UInt64 = 0
                while !Task.isCancelled {
                    let interval = state.heartbeatInterval
                    try await Task.sleep(for: state.welcomed ? interval : .milliseconds(500))
                    // relay-agent's rules: 30 s for the Welcome (AgentRuntime.welcomePatience),
                    // then two intervals unless the Welcome agreed to transport keepalive.
                    if !state.welcomed, state.silentFor > .seconds(30) { throw WatchdogTimeout() }
                    if state.welcomed, !state.transportKeepalive, state.silentFor > interval * 2 { throw WatchdogTimeout() }
                    guard state.welcomed, !state.transportKeepalive else { continue }
                    sequence += 1
                    let sentUnixNanos = Int64(Date().timeIntervalSince1970 * 1e9)
                    post.yield(.with { $0.heartbeat = .with {
                        $0.sequence = sequence
                        $0.sentUnixNanos = sentUnixNanos
                    } })
                    tally.heartbeatSent()
                }
            }
            // Status (`status N`): one batch of at most 100 entries in flight, the next after
            // its StatusAck; a new session resends from the last acknowledged sequence.
            group.addTask {
                let journal = "fleet-journal-\(slot)"
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(100))
                    guard state.welcomed, !statusInFlight.value else { continue }
                    let acked = self.memory.withLock { $0.statusAcked }
                    let wanted = UInt64(self.statusTarget.value)
                    guard acked < wanted else { continue }
                    let now = Int64(Date().timeIntervalSince1970 * 1000)
                    let entries = (acked + 1...min(wanted, acked + 100)).map { sequence in
                        Relay_V1_StatusEntry.with {
                            $0.sequence = sequence
                            $0.observedUnixMs = now
                            $0.event = .with {
                                $0.kind = "Kustomization"; $0.namespace = "flux-system"; $0.name = "fleet"; $0.severity = "info"
                                $0.reason = "ReconciliationSucceeded"; $0.message = "fleet bench status \(sequence)"
                                $0.controller = "kustomize-controller"
                            }
                        }
                    }
                    statusInFlight.set(true)
                    post.yield(.with { $0.status = .with { $0.journalID = journal; $0.entries = entries } })
                }
            }
            // Reconcile (with --fetch / `fetch on`): fetch what the DesiredState lists and
            // memory lacks; retry after the relay's pushback, or with backoff.
            let (retries, retry) = AsyncStream<Duration>.makeStream(bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                var backoff = FleetBackoff(initial: self.settings.reconnectInitial, maximum: self.settings.reconnectMax)
                for await desired in desiredStates.stream {
                    guard self.fetchSwitch.enabled else { continue }
                    switch try await self.reconcile(desired, tunnel: tunnel, post: post) {
                    case .done:
                        backoff.reset()
                    case .pushback(let delay):
                        retry.yield(delay)
                    case .failed:
                        retry.yield(backoff.next())
                    }
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
            } catch is SessionOver {
            }
            group.cancelAll()
        }
    }

    /// Counts each digest once per agent, with its fan-out time.
    private func noteArrival(_ desired: Relay_V1_DesiredState) {
        let now = unixNow() * 1000
        let fresh = memory.withLock { memory in desired.artifacts.filter { memory.seen.insert($0.digest).inserted } }
        for artifact in fresh {
            tally.received(ArtifactFacts(digest: artifact.digest, source: artifact.source, revision: artifact.revision,
                                         createdUnixMs: artifact.createdUnixMs), atUnixMs: now)
        }
    }

    private enum Pass {
        case done
        case pushback(Duration)
        case failed
    }

    /// One pass over `desired`, one fetch at a time.
    private func reconcile(_ desired: Relay_V1_DesiredState, tunnel: Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>,
                           post: AsyncStream<Relay_V1_AgentMessage>.Continuation) async throws -> Pass {
        var pushback: Duration?
        var failed = false
        for artifact in desired.artifacts {
            let key = "\(artifact.source)\u{0}\(artifact.revision)\u{0}\(artifact.digest)"
            if !memory.withLock({ $0.held.contains(artifact.digest) }) {
                do {
                    try await fetch(artifact, tunnel: tunnel)
                } catch {
                    if Task.isCancelled { throw CancellationError() }
                    if let delay = retryPushback(error), let code = (error as? RPCError)?.code,
                       code == .resourceExhausted || code == .unavailable {
                        tally.fetchRefused()
                        pushback = max(pushback ?? .zero, delay)
                    } else {
                        tally.fetchFailed()
                        failed = true
                    }
                    continue
                }
                memory.withLock { _ = $0.held.insert(artifact.digest) }
                tally.fetched(digest: artifact.digest, createdUnixMs: artifact.createdUnixMs)
            }
            // Held (fetched now, or the same bytes under a new source or revision): acknowledge once.
            if memory.withLock({ $0.acked.insert(key).inserted }) {
                post.yield(.with { $0.ack = .with {
                    $0.source = artifact.source
                    $0.revision = artifact.revision
                    $0.digest = artifact.digest
                } })
                tally.ackSent()
            }
        }
        if let pushback { return .pushback(pushback) }
        return failed ? .failed : .done
    }

    /// Fetch with every chunk's SHA-256 checked and the whole stream's digest compared;
    /// resumes from the verified prefix a failed attempt left.
    private func fetch(_ artifact: Relay_V1_Artifact, tunnel: Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>) async throws {
        let digest = artifact.digest
        let start = memory.withLock { $0.partial[digest] } ?? PartialFetch()
        let result = try await tunnel.fetch(.with { $0.digest = digest; $0.offset = start.offset }, metadata: metadata) { response in
            var progress = start
            do {
                for try await chunk in response.messages {
                    guard chunk.offset == progress.offset else {
                        throw FetchMismatch(description: "chunk at offset \(chunk.offset), expected \(progress.offset)")
                    }
                    guard Data(SHA256.hash(data: chunk.data)) == chunk.chunkSha256 else {
                        throw FetchMismatch(description: "chunk at offset \(chunk.offset) failed its SHA-256 check")
                    }
                    progress.hasher.update(data: chunk.data)
                    progress.offset += UInt64(chunk.data.count)
                    progress.total = chunk.totalSize
                }
            } catch {
                if !(error is FetchMismatch) { self.memory.withLock { $0.partial[digest] = progress } }
                throw error
            }
            return progress
        }
        memory.withLock { $0.partial[digest] = nil }
        guard result.total > 0, result.offset == result.total else {
            throw FetchMismatch(description: "fetch ended at \(result.offset) of \(result.total) bytes")
        }
        let actual = "sha256:" + result.hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard actual == digest else { throw FetchMismatch(description: "digest mismatch: expected \(digest), got \(actual)") }
    }
}
