// relay-bench: the in-process half of Benchmarks/tunnel_bench.py.
//
// It dials a running relay-server the way relay-agent does (one HTTP/2 + TLS 1.3
// connection, bearer token, the agent's transport tuning unless told otherwise), opens the
// `Connect` control stream (Hello → Welcome → DesiredState) and then either
//
//   fetch      runs `Fetch` of one artifact N times, alone, and reports MiB/s;
//   heartbeat  sends Heartbeat probes every --interval-ms on Connect and times each one
//              until the relay's reply, first with nothing else running (baseline), then
//              while a `Fetch` of a big artifact runs on the SAME connection.
//
// The artifact is named by --digest, or by --source (looked up in the DesiredState the
// relay sends after Welcome; the token's agent must be granted that source).
// Output: one JSON object on stdout. Progress goes to stderr.

import ArgumentParser
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import RelayShared
import Synchronization
import Wire

@main
struct RelayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-bench",
        abstract: "Measure the relay tunnel in-process: Fetch throughput, and Connect heartbeat round-trips under a bulk Fetch.",
        subcommands: [FetchCommand.self, HeartbeatCommand.self, FleetCommand.self]
    )
}

enum VerifyMode: String, ExpressibleByArgument, Codable, Sendable {
    /// Count bytes and check offsets only.
    case none
    /// Also check every chunk's SHA-256 (what relay-agent does before writing a chunk).
    case chunk
    /// Also hash the whole stream and compare with the digest (relay-agent's running hash).
    case full
}

struct ConnectionOptions: ParsableArguments {
    @Option(help: "The relay's tunnel address, host:port.")
    var relay: String = "127.0.0.1:8443"
    @Option(help: "CA bundle (PEM) that signed the relay's certificate.")
    var ca: String
    @Option(name: .customLong("token-file"), help: "File holding the agent bearer token.")
    var tokenFile: String
    @Option(help: "sha256:<hex> of the artifact to fetch.")
    var digest: String?
    @Option(help: "Fetch the current artifact of this source (from the relay's DesiredState).")
    var source: String?
    @Option(help: "Client HTTP/2 target window size in bytes (relay-agent: 4194304).")
    var window: Int = 4 << 20
    @Option(help: "Client HTTP/2 max frame size in bytes (relay-agent: 1048576).")
    var frame: Int = 1 << 20
    @Option(help: "Receive-side checking: none, chunk (chunk SHA-256, as relay-agent) or full (chunk + whole digest).")
    var verify: VerifyMode = .chunk

    func validate() throws {
        guard HostPort(relay) != nil else { throw ValidationError("--relay: expected host:port") }
        if digest == nil && source == nil { throw ValidationError("give --digest or --source") }
    }

    var token: String {
        get throws {
            do { return try TokenHash.readToken(file: tokenFile) } catch { throw ValidationError("\(error)") }
        }
    }

    /// The same transport relay-agent builds (AgentRuntime.makeTransport), with the window
    /// and frame size as options.
    func makeTransport() throws -> HTTP2ClientTransport.Posix {
        let address = HostPort(relay)!
        let ca = self.ca
        let window = self.window, frame = self.frame
        return try HTTP2ClientTransport.Posix(
            target: address.host.contains(":") ? .ipv6(address: address.host, port: address.port)
                : address.host.allSatisfy({ $0.isNumber || $0 == "." })
                    ? .ipv4(address: address.host, port: address.port)
                    : .dns(host: address.host, port: address.port),
            transportSecurity: .tls { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) },
            config: .defaults { transport in
                transport.http2.maxFrameSize = frame
                transport.http2.targetWindowSize = window
                transport.connection.flushCoalescing = nil
                transport.backoff.initial = .milliseconds(200)
            })
    }
}

// MARK: - The control stream

/// One `Connect` stream: Hello on open, Welcome and DesiredState remembered, heartbeat
/// probes timed from the moment they are queued (as relay-agent stamps `sent_unix_nanos`)
/// to the moment the reply is read.
final class ControlStream: Sendable {
    struct Sample: Sendable {
        var sequence: UInt64
        var phase: String
        /// Send time relative to the stream's start.
        var sentAt: Duration
        var roundTrip: Duration
    }

    private struct State {
        var welcome: Relay_V1_Welcome?
        var desired: Relay_V1_DesiredState?
        var finished = false
        var pending: [UInt64: (phase: String, sent: ContinuousClock.Instant)] = [:]
        var samples: [Sample] = []
        var sequence: UInt64 = 0
        var ended: String?
    }

    private let state = Mutex(State())
    private let outbox: AsyncStream<Relay_V1_AgentMessage>
    private let post: AsyncStream<Relay_V1_AgentMessage>.Continuation
    let origin = ContinuousClock.now

    init() {
        (outbox, post) = AsyncStream<Relay_V1_AgentMessage>.makeStream()
    }

    /// Runs the stream until `finish()` (or the relay ends it).
    func run(tunnel: Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>, metadata: Metadata) async throws {
        post.yield(.with {
            $0.hello = .with {
                $0.protocolVersion = ProtocolVersion.current.description
                $0.agentVersion = "relay-bench/1"
            }
        })
        let outbox = self.outbox
        do {
            try await tunnel.connect(metadata: metadata, requestProducer: { writer in
                for await message in outbox { try await writer.write(message) }
            }, onResponse: { response in
                for try await message in response.messages {
                    let now = ContinuousClock.now
                    switch message.kind {
                    case .welcome(let welcome)?:
                        self.update { $0.welcome = welcome }
                    case .desiredState(let desired)?:
                        self.update { $0.desired = desired }
                    case .heartbeat(let beat)? where beat.reply:
                        self.state.withLock { state in
                            if let sent = state.pending.removeValue(forKey: beat.sequence) {
                                state.samples.append(Sample(sequence: beat.sequence, phase: sent.phase,
                                                            sentAt: sent.sent - self.origin, roundTrip: now - sent.sent))
                            }
                        }
                    case .heartbeat(let beat)?:
                        self.post.yield(.with { $0.heartbeat = .with {
                            $0.sequence = beat.sequence
                            $0.sentUnixNanos = beat.sentUnixNanos
                            $0.reply = true
                        } })
                    case .statusAck?:
                        continue  // relay-bench sends no status
                    case .drain(let drain)?:
                        self.update { $0.ended = "relay drained: \(drain.reason)" }
                        return
                    case nil:
                        continue
                    }
                }
            })
            update { if $0.ended == nil { $0.ended = "relay closed the Connect stream" } }
        } catch {
            update { if $0.ended == nil { $0.ended = "Connect failed: \(error)" } }
            throw error
        }
    }

    private func update(_ body: (inout State) -> Void) {
        state.withLock { body(&$0) }
    }

    /// Waits (bounded) until Welcome and the first DesiredState arrived.
    func waitUntilReady(timeout: Duration) async throws -> (Relay_V1_Welcome, Relay_V1_DesiredState) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let current = state.withLock { ($0.welcome, $0.desired, $0.ended) }
            if let welcome = current.0, let desired = current.1 { return (welcome, desired) }
            if let ended = current.2 { throw BenchError("Connect ended before Welcome/DesiredState: \(ended)") }
            if ContinuousClock.now > deadline { throw BenchError("no Welcome and DesiredState within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Queues one probe, stamped now.
    func sendProbe(phase: String) {
        let sequence = state.withLock { state -> UInt64 in
            state.sequence += 1
            state.pending[state.sequence] = (phase, ContinuousClock.now)
            return state.sequence
        }
        post.yield(.with { $0.heartbeat = .with {
            $0.sequence = sequence
            $0.sentUnixNanos = Int64(Date().timeIntervalSince1970 * 1e9)
            $0.reply = false
        } })
    }

    /// Sends a probe every `interval` until cancelled.
    func probe(every interval: Duration, phase: String) async {
        while !Task.isCancelled {
            sendProbe(phase: phase)
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }

    /// Waits (bounded) for every outstanding reply; returns how many are still missing.
    func drainPending(timeout: Duration) async -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLock({ $0.pending.isEmpty }) { return 0 }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return state.withLock { $0.pending.count }
    }

    func samples(phase: String) -> [Sample] { state.withLock { $0.samples.filter { $0.phase == phase } } }
    func lost(phase: String) -> Int { state.withLock { $0.pending.values.filter { $0.phase == phase }.count } }

    /// Keeps the relay's silence watchdog quiet (probes tagged "keepalive", not reported)
    /// until `finish()`.
    func keepAlive() async {
        while !state.withLock({ $0.finished || $0.ended != nil }) {
            let interval = state.withLock { $0.welcome.map { Int64($0.heartbeatIntervalMs) } ?? 0 }
            if interval > 0 { sendProbe(phase: "keepalive") }
            let pause = interval > 0 ? max(20, interval / 2) : 20
            var slept: Int64 = 0
            while slept < pause, !state.withLock({ $0.finished }) {
                try? await Task.sleep(for: .milliseconds(20))
                slept += 20
            }
        }
    }

    func finish() {
        state.withLock { $0.finished = true }
        post.finish()
    }
}

// MARK: - Fetch

struct FetchResult: Codable, Sendable {
    var bytes: UInt64
    var chunks: Int
    var seconds: Double
    var firstChunkSeconds: Double
    var mibPerSecond: Double
    var verify: VerifyMode
    var digestChecked: Bool
}

func fetchOnce(tunnel: Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>, digest: String, metadata: Metadata,
               verify: VerifyMode) async throws -> FetchResult {
    let started = ContinuousClock.now
    struct Tally: Sendable { var bytes: UInt64 = 0; var chunks = 0; var total: UInt64 = 0; var first: Duration?; var digest: String? }
    let tally = try await tunnel.fetch(.with { $0.digest = digest }, metadata: metadata) { response -> Tally in
        var tally = Tally()
        var hasher = SHA256()
        for try await chunk in response.messages {
            if tally.first == nil { tally.first = ContinuousClock.now - started }
            guard chunk.offset == tally.bytes else {
                throw BenchError("chunk at offset \(chunk.offset), expected \(tally.bytes)")
            }
            if verify != .none {
                guard Data(SHA256.hash(data: chunk.data)) == chunk.chunkSha256 else {
                    throw BenchError("chunk at offset \(chunk.offset) failed its SHA-256 check")
                }
            }
            if verify == .full { hasher.update(data: chunk.data) }
            tally.bytes += UInt64(chunk.data.count)
            tally.chunks += 1
            tally.total = chunk.totalSize
        }
        if verify == .full { tally.digest = "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined() }
        return tally
    }
    let elapsed = ContinuousClock.now - started
    guard tally.bytes == tally.total, tally.bytes > 0 else {
        throw BenchError("fetch ended at \(tally.bytes) of \(tally.total) bytes")
    }
    if let actual = tally.digest, actual != digest {
        throw BenchError("digest mismatch: expected \(digest), got \(actual)")
    }
    let seconds = elapsed.seconds
    return FetchResult(bytes: tally.bytes, chunks: tally.chunks, seconds: seconds,
                       firstChunkSeconds: tally.first?.seconds ?? 0,
                       mibPerSecond: Double(tally.bytes) / 1_048_576 / seconds, verify: verify,
                       digestChecked: tally.digest != nil)
}

/// Dials, opens Connect, resolves the digest, runs `body`, closes Connect.
func withSession<T: Sendable>(
    _ options: ConnectionOptions,
    _ body: @Sendable @escaping (Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>, ControlStream, String, Metadata) async throws -> T
) async throws -> T {
    let metadata: Metadata = ["authorization": "Bearer \(try options.token)"]
    let transport = try options.makeTransport()
    return try await withGRPCClient(transport: transport) { client in
        let tunnel = Relay_V1_Tunnel.Client(wrapping: client)
        let control = ControlStream()
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await control.run(tunnel: tunnel, metadata: metadata)
                return nil
            }
            group.addTask {
                await control.keepAlive()
                return nil
            }
            group.addTask {
                let (_, desired) = try await control.waitUntilReady(timeout: .seconds(15))
                let digest: String
                if let given = options.digest {
                    digest = given
                } else if let artifact = desired.artifacts.first(where: { $0.source == options.source }) {
                    digest = artifact.digest
                } else {
                    throw BenchError("the relay's DesiredState lists no source '\(options.source ?? "")' for this token "
                                     + "(it lists: \(desired.artifacts.map(\.source).joined(separator: ", ")))")
                }
                do {
                    let result = try await body(tunnel, control, digest, metadata)
                    control.finish()
                    return result
                } catch {
                    control.finish()
                    throw error
                }
            }
            var result: T?
            for try await value in group {
                if let value { result = value }
            }
            guard let result else { throw BenchError("no result") }
            return result
        }
    }
}

// MARK: - Statistics

struct LatencyStats: Codable, Sendable {
    var count: Int
    var lost: Int
    var p50Ms: Double
    var p90Ms: Double
    var p99Ms: Double
    var maxMs: Double
    var meanMs: Double

    init(_ samples: [Duration], lost: Int) {
        let ms = samples.map { $0.seconds * 1000 }.sorted()
        count = ms.count
        self.lost = lost
        func rank(_ q: Double) -> Double {
            guard !ms.isEmpty else { return .nan }
            return ms[min(ms.count - 1, max(0, Int((q * Double(ms.count)).rounded(.up)) - 1))]
        }
        p50Ms = rank(0.50)
        p90Ms = rank(0.90)
        p99Ms = rank(0.99)
        maxMs = ms.last ?? .nan
        meanMs = ms.isEmpty ? .nan : ms.reduce(0, +) / Double(ms.count)
    }
}

struct TransportSettings: Codable, Sendable {
    var windowBytes: Int
    var maxFrameBytes: Int
    var flushCoalescing: Bool
}

func peakRSSBytes() -> Int {
    var usage = rusage()
    #if os(Linux)
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024  // KiB on Linux
    #else
    getrusage(RUSAGE_SELF, &usage)
    return usage.ru_maxrss  // bytes on Darwin
    #endif
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
    fflush(nil)
}

func progress(_ text: String) {
    FileHandle.standardError.write(Data("relay-bench: \(text)\n".utf8))
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

// MARK: - Subcommands

struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch", abstract: "Fetch one artifact --runs times on one connection, nothing else running; report MiB/s.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Fetches, one after the other.")
    var runs: Int = 1

    struct Output: Codable {
        var mode = "fetch"
        var digest: String
        var transport: TransportSettings
        var runs: [FetchResult]
        var medianMibPerSecond: Double
        var peakRSSBytes: Int
    }

    func run() async throws {
        AllocatorTuning.apply()  // as `relay-agent run` does
        let options = connection, runs = max(1, self.runs)
        let (digest, results) = try await withSession(options) { tunnel, _, digest, metadata in
            var results: [FetchResult] = []
            for index in 0..<runs {
                let result = try await fetchOnce(tunnel: tunnel, digest: digest, metadata: metadata, verify: options.verify)
                progress(String(format: "fetch %d/%d: %.1f MiB in %.3f s = %.1f MiB/s", index + 1, runs,
                                Double(result.bytes) / 1_048_576, result.seconds, result.mibPerSecond))
                results.append(result)
            }
            return (digest, results)
        }
        let speeds = results.map(\.mibPerSecond).sorted()
        try printJSON(Output(digest: digest,
                             transport: .init(windowBytes: options.window, maxFrameBytes: options.frame, flushCoalescing: false),
                             runs: results, medianMibPerSecond: speeds[speeds.count / 2], peakRSSBytes: peakRSSBytes()))
    }
}

struct HeartbeatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heartbeat",
        abstract: "Heartbeat round-trips on Connect: idle, then while Fetch of a big artifact runs on the same connection.")

    @OptionGroup var connection: ConnectionOptions
    @Option(name: .customLong("interval-ms"), help: "Probe interval in milliseconds.")
    var intervalMs: Int = 20
    @Option(name: .customLong("baseline-seconds"), help: "Probing with no fetch running, first.")
    var baselineSeconds: Double = 3
    @Option(help: "Fetches of the artifact under probing (samples are pooled).")
    var repeats: Int = 3
    @Flag(help: "Include every loaded-phase sample (send time and round trip, ms) in the JSON.")
    var samples = false

    struct Output: Codable {
        var mode = "heartbeat"
        var digest: String
        var transport: TransportSettings
        var intervalMs: Int
        var heartbeatIntervalFromRelayMs: UInt32
        var idle: LatencyStats
        var underFetch: LatencyStats
        var fetches: [FetchResult]
        var medianFetchMibPerSecond: Double
        var samples: [[Double]]?
        var peakRSSBytes: Int
    }

    func run() async throws {
        AllocatorTuning.apply()  // as `relay-agent run` does
        let options = connection, interval = Duration.milliseconds(max(1, intervalMs))
        let baseline = baselineSeconds, repeats = max(1, self.repeats), wantSamples = samples
        let intervalMs = self.intervalMs
        let output = try await withSession(options) { tunnel, control, digest, metadata -> Output in
            let (welcome, _) = try await control.waitUntilReady(timeout: .seconds(1))
            // Baseline: nothing else on the connection.
            if baseline > 0 {
                let prober = Task { await control.probe(every: interval, phase: "idle") }
                try await Task.sleep(for: .milliseconds(Int64(baseline * 1000)))
                prober.cancel()
                _ = await prober.value
                _ = await control.drainPending(timeout: .seconds(2))
            }
            let idle = control.samples(phase: "idle")
            progress(String(format: "idle: %d probes, p50 %.2f ms", idle.count,
                            LatencyStats(idle.map(\.roundTrip), lost: 0).p50Ms))
            // Under load: the same connection carries a bulk Fetch.
            var fetches: [FetchResult] = []
            for index in 0..<repeats {
                try await Task.sleep(for: .milliseconds(200))
                let prober = Task { await control.probe(every: interval, phase: "fetch") }
                let result: FetchResult
                do {
                    result = try await fetchOnce(tunnel: tunnel, digest: digest, metadata: metadata, verify: options.verify)
                } catch {
                    prober.cancel()
                    throw error
                }
                prober.cancel()
                _ = await prober.value
                _ = await control.drainPending(timeout: .seconds(3))
                fetches.append(result)
                let loaded = control.samples(phase: "fetch")
                progress(String(format: "fetch %d/%d: %.1f MiB/s; probes so far %d, p99 %.2f ms", index + 1, repeats,
                                result.mibPerSecond, loaded.count, LatencyStats(loaded.map(\.roundTrip), lost: 0).p99Ms))
            }
            let loaded = control.samples(phase: "fetch")
            let speeds = fetches.map(\.mibPerSecond).sorted()
            return Output(
                digest: digest,
                transport: .init(windowBytes: options.window, maxFrameBytes: options.frame, flushCoalescing: false),
                intervalMs: intervalMs, heartbeatIntervalFromRelayMs: welcome.heartbeatIntervalMs,
                idle: LatencyStats(idle.map(\.roundTrip), lost: control.lost(phase: "idle")),
                underFetch: LatencyStats(loaded.map(\.roundTrip), lost: control.lost(phase: "fetch")),
                fetches: fetches, medianFetchMibPerSecond: speeds[speeds.count / 2],
                samples: wantSamples ? loaded.map { [$0.sentAt.seconds * 1000, $0.roundTrip.seconds * 1000] } : nil,
                peakRSSBytes: peakRSSBytes())
        }
        try printJSON(output)
    }
}
