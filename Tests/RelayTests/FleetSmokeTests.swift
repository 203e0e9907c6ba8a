import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// 200 simulated agents (`relay-bench fleet`, each on its own HTTP/2 + TLS connection) against
/// a real relay: all are welcomed, a new revision reaches all of them, all come back after a
/// kill -9 and restart of the relay, and all fetch and verify an artifact.
@Suite struct FleetSmokeTests {
    static let fleetSize = 200

    /// A repository `podinfo` with one commit and a relay (not started, heartbeat 2 s: 200 simulated
    /// agents on a loaded 2-core machine missed 1 s heartbeats in a full-suite run) that
    /// knows `fleetSize` agents fleet-00000… with tokens fleet-token-<i>, as relay-bench fleet names them.
    static func relayForFleet(_ prefix: String) throws -> (TemporaryDirectory, TestRepo, RelayHarness.Source, RelayHarness) {
        let dir = try TemporaryDirectory(prefix: prefix)
        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        let source = RelayHarness.Source(name: "podinfo", repo: repo, branch: "main")
        let agents = (0..<fleetSize).map {
            RelayHarness.Agent(name: String(format: "fleet-%05d", $0), token: "fleet-token-\($0)", sources: ["podinfo"])
        }
        return (dir, repo, source, try RelayHarness(sources: [source], agents: agents, dir: dir, heartbeat: "2s"))
    }

    @Test func twoHundredSimulatedAgentsConnectFollowARevisionSurviveAKillAndFetch() throws {
        let (dir, repo, source, harness) = try Self.relayForFleet("fleet-smoke")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        let fleet = try FleetProcess(dir: dir, port: harness.tunnelPort, ca: harness.certificates.caCertificate.path,
                                     agents: Self.fleetSize)
        defer { fleet.stop() }

        // Everyone welcomed.
        var report = try fleet.waitFor("all \(Self.fleetSize) agents welcomed", timeout: 60) { $0.gauges.welcomed == Self.fleetSize }
        #expect(report.counters.nameMismatches == 0)

        // A new revision (webhook) reaches every agent.
        try repo.write("app.yaml", "a: 2\n")
        let commit = try repo.commit("second")
        try harness.pushWebhook(source: source)
        report = try fleet.waitFor("revision \(commit) at every agent", timeout: 20) {
            $0.artifact(commit: commit)?.received == Self.fleetSize
        }

        // kill -9 and restart: every agent is welcomed again.
        fleet.send("mark")
        if let relay = harness.relay { kill(-relay.pid, SIGKILL) }
        harness.stopRelay()
        try harness.startRelay()
        report = try fleet.waitFor("all agents back after kill -9", timeout: 40) {
            $0.gauges.welcomed == Self.fleetSize && $0.epoch.welcomed == Self.fleetSize
        }
        #expect(report.epoch.sinceMark.welcomes >= Self.fleetSize)

        // Fetch: every agent fetches and verifies the current artifact and acknowledges it.
        fleet.send("fetch on")
        report = try fleet.waitFor("artifact fetched and verified by every agent", timeout: 30) {
            $0.artifact(commit: commit)?.fetchedVerified == Self.fleetSize
        }
        #expect(report.counters.fetchesOk >= Self.fleetSize)
        #expect(report.counters.acksSent >= Self.fleetSize)
    }
}

extension FleetSmokeTests {
    /// A fleet arriving at once is admitted at `limits.sessionsPerSecond`: the rest are refused
    /// with a retry hint they honour, and all are in after about fleet ÷ rate seconds. A graceful
    /// restart drains everyone with delays spread over the time that rate needs, and all come back.
    @Test func aStormIsAdmittedAtTheConfiguredRateAndAGracefulRestartBringsEveryoneBack() throws {
        let (dir, _, _, harness) = try Self.relayForFleet("fleet-storm")
        defer { harness.shutdown(); dir.remove() }
        harness.limitsExtraYAML = ["sessionsPerSecond: 40"]
        try harness.startRelay()
        let started = Date()
        let fleet = try FleetProcess(dir: dir, port: harness.tunnelPort, ca: harness.certificates.caCertificate.path,
                                     agents: Self.fleetSize)
        defer { fleet.stop() }

        var report = try fleet.waitFor("all \(Self.fleetSize) agents welcomed at 40 a second", timeout: 40) {
            $0.gauges.welcomed == Self.fleetSize
        }
        let took = Date().timeIntervalSince(started)
        // 40 at once, then 160 at 40 a second: about 4 s, not all at once and not at backoff pace.
        #expect(took >= 3, "all \(Self.fleetSize) in \(took) s: faster than the admission rate allows")
        // How many are refused depends on how fast 200 TLS clients arrive on this machine (54 to
        // over 100 seen): some are, and the relay counts at least what the clients saw.
        #expect(report.counters.refusals >= 10, "refused and told when to come back: \(report.counters.refusals)")
        #expect(try harness.relayMetrics()["relay_sessions_refused_total"] ?? 0 >= Double(report.counters.refusals))

        // Graceful restart: every agent is drained, then all are welcomed by the new relay.
        fleet.send("mark")
        harness.stopRelay()
        try harness.startRelay()
        report = try fleet.waitFor("all agents back after a graceful restart", timeout: 40) {
            $0.gauges.welcomed == Self.fleetSize && $0.epoch.welcomed == Self.fleetSize
        }
        #expect(report.epoch.sinceMark.disconnects["drain", default: 0] >= Self.fleetSize * 9 / 10,
                "drained: \(report.epoch.sinceMark.disconnects)")
    }
}

/// `relay-bench fleet` with its stdin on a FIFO (commands) and its stdout (JSON lines) in a file.
private final class FleetProcess {
    struct Report: Decodable {
        struct Gauges: Decodable { var welcomed: Int }
        struct Counters: Decodable {
            var welcomes: Int; var nameMismatches: Int; var fetchesOk: Int; var acksSent: Int; var refusals: Int
            var disconnects: [String: Int]
        }
        struct Epoch: Decodable { var welcomed: Int; var sinceMark: Counters }
        struct Artifact: Decodable { var revision: String; var received: Int; var fetchedVerified: Int }
        var type: String
        var gauges: Gauges
        var counters: Counters
        var epoch: Epoch
        var artifacts: [Artifact]

        func artifact(commit: String) -> Artifact? { artifacts.first { $0.revision.hasSuffix(commit) } }
    }

    private let process: BackgroundProcess
    private let output: URL
    private let commands: Int32

    init(dir: TemporaryDirectory, port: Int, ca: String, agents: Int) throws {
        let fifo = dir.appending("fleet.commands").path
        output = dir.appending("fleet.jsonl")
        guard mkfifo(fifo, 0o600) == 0 else { throw TestProcessError.launchFailed(command: "mkfifo \(fifo)", underlying: "errno \(errno)") }
        // Read-write: opening does not wait for the reader, and the reader sees no end of input
        // until this descriptor is closed.
        commands = open(fifo, O_RDWR | O_CLOEXEC)
        guard commands >= 0 else { throw TestProcessError.launchFailed(command: "open \(fifo)", underlying: "errno \(errno)") }
        process = try BackgroundProcess(
            name: "relay-bench fleet", executable: "/bin/sh",
            arguments: ["-c", "exec \"$0\" \"$@\" <\"\(fifo)\" >\"\(output.path)\"", Binaries.relayBench, "fleet",
                        "--relay", "127.0.0.1:\(port)", "--ca", ca, "--agents", "\(agents)",
                        "--reconnect-initial-ms", "100", "--reconnect-max-ms", "1000", "--progress-interval", "0"],
            logFile: dir.appending("fleet.log"))
    }

    func send(_ command: String) {
        let line = Array((command + "\n").utf8)
        _ = line.withUnsafeBytes { write(commands, $0.baseAddress, $0.count) }
    }

    private func reports() -> [String] {
        let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { $0.contains("\"type\":\"report\"") }
    }

    /// Asks for a report (bounded wait for it).
    func report() throws -> Report {
        let before = reports().count
        send("report")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let lines = reports()
            if lines.count > before {
                let decoder = JSONDecoder()
                decoder.keyDecodingStrategy = .convertFromSnakeCase
                return try decoder.decode(Report.self, from: Data(lines[before].utf8))
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestProcessError.timedOut(command: "relay-bench fleet report\n\(process.log().suffix(3000))", seconds: 10)
    }

    /// Polls reports until `condition` holds.
    @discardableResult
    func waitFor(_ what: String, timeout: Double, _ condition: (Report) -> Bool) throws -> Report {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Report?
        while Date() < deadline {
            let report = try report()
            if condition(report) { return report }
            last = report
            Thread.sleep(forTimeInterval: 0.25)
        }
        throw TestProcessError.timedOut(
            command: "\(what); last report: gauges \(String(describing: last?.gauges)), epoch \(String(describing: last?.epoch)), "
                + "artifacts \(String(describing: last?.artifacts))\n\(process.log().suffix(3000))",
            seconds: timeout)
    }

    func stop() {
        send("quit")
        close(commands)
        process.stop(grace: 15)
    }
}
