// relay-bench fleet: thousands of simulated agents in one process, each with its own
// HTTP/2 + TLS connection (relay-agent's transport settings), for Benchmarks/fleet_bench.py
// and the fleet smoke test.
//
// stdout: JSON lines only — a `progress` object every --progress-interval seconds, a
// `report` object on the stdin command `report` and at exit. Diagnostics go to stderr.
// stdin commands (one a line): report, mark, fetch on, fetch off, status N (each agent sends N more status entries), quit.

import ArgumentParser
import Foundation
import RelayShared
import Synchronization

struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Simulate a fleet of agents against a relay: sessions, heartbeats, DesiredState fan-out, fetches.",
        discussion: """
            Agent i (from --first-index) is named by --name-format and authenticates with the token \
            "<token-prefix><i>"; the relay must list each one (relay.yaml agents[]: name, tokenSHA256 = \
            sha256 hex of the token). Each agent reconnects like relay-agent: backoff with full jitter \
            (--reconnect-initial-ms, --reconnect-max-ms, reset after a session longer than 10 s), the \
            Drain delay after a Drain, and exactly grpc-retry-pushback-ms after a refused Connect.

            stdout carries JSON lines only: {"type":"progress",...} every --progress-interval seconds \
            and {"type":"report",...} on `report` and at exit. stdin commands: report, mark (start a \
            new epoch: Welcome coverage and heartbeat round trips count from here), fetch on, fetch \
            off, quit. With --duration 0 the fleet runs until `quit` or the end of stdin.
            """)

    @Option(help: "The relay's tunnel address(es), host:port[,host:port...]; agents are spread over them round-robin.")
    var relay: String = "127.0.0.1:8443"
    @Option(help: "CA bundle (PEM) that signed the relay's certificate.")
    var ca: String
    @Flag(name: .customLong("no-hostname-verification"),
          help: "Check the relay's certificate chain but not that it names the dialled address (addresses not in the certificate).")
    var noHostnameVerification = false
    @Option(help: "Number of simulated agents.")
    var agents: Int = 100
    @Option(name: .customLong("first-index"), help: "Index of the first agent (names and tokens count from here).")
    var firstIndex: Int = 0
    @Option(name: .customLong("name-format"), help: "printf format of agent names; the Welcome's name is checked against it.")
    var nameFormat: String = "fleet-%05d"
    @Option(name: .customLong("token-prefix"), help: "Agent i's bearer token is this prefix followed by i.")
    var tokenPrefix: String = "fleet-token-"
    @Option(name: .customLong("ramp-per-second"), help: "Start this many agents per second (0: all at once, like a crash restart).")
    var rampPerSecond: Double = 0
    @Flag(help: "Fetch and verify every artifact the DesiredState lists and the agent does not hold (also `fetch on` on stdin).")
    var fetch = false
    @Flag(help: "The addresses are replicas of one relay: after a failed session an agent dials the next (relay-agent's `relays:`).")
    var failover = false
    @Flag(name: .customLong("heartbeat-messages"),
          help: "Send Heartbeat messages and offer no transport keepalive, as agents that predate transport keepalive do.")
    var heartbeatMessages = false

    @Option(help: "Seconds to run (0: until `quit` or the end of stdin).")
    var duration: Double = 0
    @Option(name: .customLong("reconnect-initial-ms"), help: "Backoff start (relay-agent reconnectInitial).")
    var reconnectInitialMs: Int = 500
    @Option(name: .customLong("reconnect-max-ms"), help: "Backoff ceiling (relay-agent reconnectMax).")
    var reconnectMaxMs: Int = 30_000
    @Option(name: .customLong("progress-interval"), help: "Seconds between progress lines (0: none).")
    var progressInterval: Double = 1

    func validate() throws {
        guard !targets.isEmpty, targets.count == relay.split(separator: ",").count else {
            throw ValidationError("--relay: expected host:port[,host:port...], got '\(relay)'")
        }
        guard agents > 0 else { throw ValidationError("--agents must be at least 1") }
        guard firstIndex >= 0 else { throw ValidationError("--first-index must not be negative") }
        guard rampPerSecond >= 0, duration >= 0, progressInterval >= 0 else {
            throw ValidationError("--ramp-per-second, --duration and --progress-interval must not be negative")
        }
        guard reconnectInitialMs > 0, reconnectMaxMs >= reconnectInitialMs else {
            throw ValidationError("--reconnect-initial-ms must be positive and at most --reconnect-max-ms")
        }
        guard nameFormat.contains("%") else { throw ValidationError("--name-format needs a printf conversion for the index, e.g. fleet-%05d") }
    }

    private var targets: [HostPort] {
        relay.split(separator: ",").compactMap { HostPort(String($0)) }
    }

    func run() async throws {
        // No AllocatorTuning here (relay-agent's keeps ~1 MiB chunk buffers in the heap): across
        // thousands of connections that only raises the harness's own RSS after a bulk fetch.
        let descriptors = FileDescriptorLimit.raiseToHard()
        if descriptors < agents + 64 {
            progress("warning: the open-file limit is \(descriptors), below --agents \(agents) + 64: raise the hard limit (ulimit -Hn) "
                     + "or some agents will fail to connect")
        }
        let caPEM: [UInt8]
        do { caPEM = Array(try Data(contentsOf: URL(fileURLWithPath: ca))) } catch {
            throw ValidationError("--ca: cannot read \(ca): \(error)")
        }
        let settings = FleetSettings(targets: targets, caPEM: caPEM, hostnameVerification: !noHostnameVerification,
                                     nameFormat: nameFormat, tokenPrefix: tokenPrefix, firstIndex: firstIndex,
                                     reconnectInitial: .milliseconds(reconnectInitialMs), reconnectMax: .milliseconds(reconnectMaxMs),
                                     transportKeepalive: !heartbeatMessages, failover: failover)
        let statusTarget = StatusTarget()
        let tally = FleetTally(agents: agents)
        let fetchSwitch = FetchSwitch(enabled: fetch)
        let stop = StopSignal()
        let commands = StdinLines.start()
        let (agents, ramp, duration, interval) = (self.agents, rampPerSecond, self.duration, progressInterval)
        progress("fleet: \(agents) agents → \(relay)\(ramp > 0 ? String(format: ", %.0f/s", ramp) : ", all at once")"
                 + (fetch ? ", fetching" : ""))

        await withDiscardingTaskGroup { group in
            group.addTask {
                for await line in commands {
                    switch line.trimmingCharacters(in: .whitespaces).lowercased() {
                    case "report": JSONLines.emit(tally.report(fetch: fetchSwitch.enabled))
                    case "mark": tally.mark()
                    case "fetch on": fetchSwitch.set(true)
                    case "fetch off": fetchSwitch.set(false)
                    case let command where command.hasPrefix("status "):
                        if let count = Int(command.dropFirst("status ".count)), count > 0 { statusTarget.add(count) }
                    case "quit", "exit": stop.fire()
                    case "": continue
                    case let other: progress("unknown command '\(other)' (report, mark, fetch on, fetch off, status N, quit)")
                    }
                }
                if duration == 0 && !Task.isCancelled { stop.fire() }  // end of stdin
            }
            if interval > 0 {
                group.addTask {
                    let clock = ContinuousClock()
                    var next = clock.now
                    while !Task.isCancelled {
                        next += .milliseconds(Int64(interval * 1000))
                        do { try await clock.sleep(until: next) } catch { return }
                        JSONLines.emit(tally.progress(fetch: fetchSwitch.enabled))
                    }
                }
            }
            if duration > 0 {
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(Int64(duration * 1000)))
                    stop.fire()
                }
            }
            let started = ContinuousClock.now
            for slot in 0..<agents {
                if stop.fired { break }
                let agent = FleetAgent(slot: slot, settings: settings, tally: tally, fetchSwitch: fetchSwitch, statusTarget: statusTarget)
                group.addTask { await agent.run() }
                if ramp > 0 {
                    try? await Task.sleep(until: started + .milliseconds(Int64(Double(slot + 1) / ramp * 1000)), clock: .continuous)
                }
            }
            await stop.wait()
            JSONLines.emit(tally.report(fetch: fetchSwitch.enabled))
            progress("fleet: final report printed; stopping")
            // Closing thousands of connections must not hold the exit up.
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: 10)
                Foundation.exit(0)
            }
            group.cancelAll()
        }
    }
}

/// Fired once (quit, end of stdin, --duration); awaited by the command.
final class StopSignal: Sendable {
    private let state = Mutex<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var fired: Bool { state.withLock { $0.fired } }

    func fire() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state = (true, []) }
            return state.fired ? [] : state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.fired { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}

/// stdin, line by line, read on a thread of its own (never on the cooperative pool).
enum StdinLines {
    static func start() -> AsyncStream<String> {
        let (lines, continuation) = AsyncStream<String>.makeStream()
        Thread.detachNewThread {
            while let line = readLine(strippingNewline: true) { continuation.yield(line) }
            continuation.finish()
        }
        return lines
    }
}
