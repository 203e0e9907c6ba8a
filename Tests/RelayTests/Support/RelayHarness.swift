import Foundation
@testable import RelayShared

/// Built executables of this package (beside the test bundle).
enum Binaries {
    static func path(_ name: String) -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name),
            root.appendingPathComponent(".build/debug/\(name)"),
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }?.path ?? candidates[1].path
    }

    static var relayServer: String { path("relay-server") }
    static var relayAgent: String { path("relay-agent") }
    static var relayBench: String { path("relay-bench") }
    static var artifactMirror: String { path("artifact-mirror") }
}

/// A real relay-server process with real TLS (dev certificates) and real relay-agent
/// processes, all on loopback in one temporary directory.
final class RelayHarness: @unchecked Sendable {
    struct Source { var name: String; var repo: TestRepo; var branch: String }
    struct Agent { var name: String; var token: String; var sources: [String] }
    struct Published: Decodable, Equatable { var source: String; var revision: String; var digest: String; var size: UInt64 }

    let dir: TemporaryDirectory
    let certificates: DevCertificates
    let sources: [Source]
    let agents: [Agent]
    let webhookToken = "hook-secret"
    /// A reader token for the status API, stream and page.
    let readerToken = "reader-secret"
    /// Extra YAML for relay.yaml: top level, and inside a source's mapping.
    var relayExtraYAML = ""
    /// Extra fields inside relay.yaml's `limits:` mapping (e.g. `sessionsPerSecond: 40`).
    var limitsExtraYAML: [String] = []
    var sourceExtraYAML: [String: String] = [:]
    private(set) var tunnelPort = 0
    private(set) var httpPort = 0
    private(set) var relay: BackgroundProcess?
    private var agentProcesses: [String: BackgroundProcess] = [:]
    private var relayStarts = 0
    private let heartbeat: String
    private let chunk: Int?
    /// Start the relay with this soft RLIMIT_NOFILE (`ulimit -Sn`), when set.
    var relaySoftFileLimit: Int?
    /// Relay requires client certificates signed by the dev CA.
    var requireClientCertificates = false
    /// Client certificate (cert, key) per agent name, when set.
    var clientCertificates: [String: (URL, URL)] = [:]
    /// Extra fields inside relay.yaml's `tls:` mapping (e.g. `minVersion: "1.2"`).
    var tlsExtraYAML: [String] = []
    /// The CA an agent trusts for the relay, per agent name, when not the dev CA.
    var caFiles: [String: URL] = [:]
    /// Agents that serve Flux: their `listen` port (picked on first use) and extra YAML
    /// (e.g. a `flux:` section).
    private(set) var fluxPorts: [String: Int] = [:]
    private var fluxYAML: [String: String] = [:]

    /// Makes agent `name` serve Flux on a free loopback port; returns the port.
    @discardableResult
    func serveFlux(_ name: String, port chosen: Int? = nil, yaml: String = "") throws -> Int {
        let port = try chosen ?? fluxPorts[name] ?? LoopbackPort.free()
        fluxPorts[name] = port
        fluxYAML[name] = yaml
        return port
    }

    init(sources: [Source], agents: [Agent], dir: TemporaryDirectory, heartbeat: String = "500ms", chunkBytes: Int? = nil) throws {
        self.dir = dir
        self.sources = sources
        self.agents = agents
        self.heartbeat = heartbeat
        self.chunk = chunkBytes
        certificates = try DevCertificates.ensure(in: dir.appending("tls"))
        for agent in agents {
            try Data((agent.token + "\n").utf8).write(to: dir.appending("\(agent.name).token"))
        }
    }

    var relayLog: String { (try? String(contentsOf: dir.appending("relay.log"), encoding: .utf8)) ?? "" }

    func agentLog(_ name: String) -> String {
        (try? String(contentsOf: dir.appending("agent-\(name).log"), encoding: .utf8)) ?? ""
    }

    /// Writes relay.yaml (ports are picked on first start and kept across restarts).
    private func writeRelayConfig() throws {
        var yaml = """
            listen: 127.0.0.1:\(tunnelPort)
            http: 127.0.0.1:\(httpPort)
            tls: {certFile: \(certificates.serverCertificate.path), keyFile: \(certificates.serverKey.path)\(requireClientCertificates ? ", clientCAFile: \(certificates.caCertificate.path)" : "")\(tlsExtraYAML.map { ", " + $0 }.joined())}
            dataDir: \(dir.appending("relay-data").path)
            webhookToken: \(webhookToken)
            drainRetryAfter: 300ms
            limits: {heartbeatInterval: \(heartbeat)\(chunk.map { ", maxChunkBytes: \($0)" } ?? "")\(limitsExtraYAML.map { ", " + $0 }.joined())}
            sources:

            """
        for source in sources {
            yaml += "  - {name: \(source.name), url: \(source.repo.url.path), ref: {branch: \(source.branch)}, interval: 1h\(sourceExtraYAML[source.name].map { ", " + $0 } ?? "")}\n"
        }
        yaml += relayExtraYAML
        yaml += "readers:\n  - {name: dashboard, tokenSHA256: \(TokenHash.sha256Hex(readerToken))}\n"
        yaml += "agents:\n"
        for agent in agents {
            yaml += "  - {name: \(agent.name), tokenSHA256: \(TokenHash.sha256Hex(agent.token)), sources: [\(agent.sources.joined(separator: ", "))]}\n"
        }
        try Data(yaml.utf8).write(to: dir.appending("relay.yaml"))
    }

    /// Starts the relay and waits until its tunnel and HTTP ports accept connections.
    func startRelay(environment: [String: String] = [:]) throws {
        if tunnelPort == 0 {
            tunnelPort = try LoopbackPort.free()
            httpPort = try LoopbackPort.free()
        }
        try writeRelayConfig()
        relayStarts += 1
        let log = dir.appending("relay.log")
        if relayStarts > 1, let handle = try? FileHandle(forWritingTo: log) {
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("---- restart \(relayStarts) ----\n".utf8))
            try handle.close()
        }
        let serve = ["serve", "--config", dir.appending("relay.yaml").path]
        // With a soft descriptor limit: the shell lowers it, then becomes the relay.
        let (executable, arguments) = relaySoftFileLimit.map {
            ("/bin/sh", ["-c", "ulimit -Sn \($0) && exec \"$0\" \"$@\"", Binaries.relayServer] + serve)
        } ?? (Binaries.relayServer, serve)
        let process = try BackgroundProcess(
            name: "relay-server", executable: executable, arguments: arguments,
            logFile: relayStarts == 1 ? log : dir.appending("relay-\(relayStarts).log"),
            environment: testEnvironment(environment.mapValues { Optional($0) }))
        relay = process
        try LoopbackPort.waitUntilAccepting(tunnelPort, process: process, timeout: 20)
        try LoopbackPort.waitUntilAccepting(httpPort, process: process, timeout: 20)
    }

    /// Log of the relay since its last start.
    var currentRelayLog: String {
        let file = relayStarts <= 1 ? dir.appending("relay.log") : dir.appending("relay-\(relayStarts).log")
        return (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    }

    /// kill -9 of the relay (and its supervisor shell).
    func killRelay() {
        guard let process = relay else { return }
        relay = nil
        kill(-process.pid, SIGKILL)
        process.stop(grace: 1)
    }

    func stopRelay() {
        relay?.stop()
        relay = nil
    }

    /// With `relayPorts`, the agent lists those relays (`relays`, replicas on loopback).
    func agentConfig(_ name: String, relayPort: Int? = nil, relayPorts: [Int]? = nil, token: String? = nil) throws -> URL {
        let tokenFile = dir.appending("\(name).token")
        if let token { try Data(token.utf8).write(to: tokenFile) }
        let relayLine = relayPorts.map { "relays: [" + $0.map { "127.0.0.1:\($0)" }.joined(separator: ", ") + "]" }
            ?? "relay: 127.0.0.1:\(relayPort ?? tunnelPort)"
        let yaml = """
            \(relayLine)
            caFile: \((caFiles[name] ?? certificates.caCertificate).path)
            tokenFile: \(tokenFile.path)
            dataDir: \(dir.appending("agent-\(name)").path)
            reconnectInitial: 100ms
            reconnectMax: 1s

            """ + (clientCertificates[name].map { "clientCertFile: \($0.0.path)\nclientKeyFile: \($0.1.path)\n" } ?? "")
            + (fluxPorts[name].map { "listen: 127.0.0.1:\($0)\n" + (fluxYAML[name] ?? "") } ?? "")
        let url = dir.appending("agent-\(name).yaml")
        try Data(yaml.utf8).write(to: url)
        return url
    }

    @discardableResult
    func startAgent(_ name: String, relayPort: Int? = nil, relayPorts: [Int]? = nil, token: String? = nil) throws -> BackgroundProcess {
        let config = try agentConfig(name, relayPort: relayPort, relayPorts: relayPorts, token: token)
        let process = try BackgroundProcess(
            name: "relay-agent-\(name)", executable: Binaries.relayAgent,
            arguments: ["run", "--config", config.path], logFile: dir.appending("agent-\(name).log"))
        agentProcesses[name] = process
        return process
    }

    func stopAgent(_ name: String) {
        agentProcesses.removeValue(forKey: name)?.stop()
    }

    /// kill -9 of the agent (and its supervisor shell).
    func killAgent(_ name: String) {
        guard let process = agentProcesses.removeValue(forKey: name) else { return }
        kill(-process.pid, SIGKILL)
        process.stop(grace: 1)
    }

    /// `relay-agent list --json`.
    func published(_ name: String) throws -> [Published] {
        let output = try runProcess(Binaries.relayAgent, ["list", "--config", dir.appending("agent-\(name).yaml").path, "--json"])
        return try JSONDecoder().decode([Published].self, from: Data(output.stdout.utf8))
    }

    /// Polls (bounded) until `condition` holds; returns the time it took.
    @discardableResult
    func waitUntil(_ what: String, timeout: Double = 20, _ condition: () throws -> Bool) throws -> Double {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if (try? condition()) == true { return Date().timeIntervalSince(start) }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw HarnessError.timedOut(what, relayLog: currentRelayLog, agentLogs: agents.map { "\($0.name):\n\(agentLog($0.name))" })
    }

    /// `waitUntil` for a condition that awaits (registry reads).
    @discardableResult
    func waitUntil(_ what: String, timeout: Double = 20, _ condition: () async throws -> Bool) async throws -> Double {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if (try? await condition()) == true { return Date().timeIntervalSince(start) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError.timedOut(what, relayLog: currentRelayLog, agentLogs: agents.map { "\($0.name):\n\(agentLog($0.name))" })
    }

    /// POSTs a GitLab push event for `source` to the relay's webhook.
    @discardableResult
    func pushWebhook(source: Source, token: String? = nil) throws -> ProcessOutput {
        let body = #"{"object_kind":"push","ref":"refs/heads/\#(source.branch)","project":{"git_http_url":"\#(source.repo.url.path)"}}"#
        return try runProcess("/usr/bin/env", ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST",
                                               "-H", "X-Gitlab-Token: \(token ?? webhookToken)",
                                               "-H", "Content-Type: application/json", "--data", body,
                                               "http://127.0.0.1:\(httpPort)/hooks/gitlab"])
    }

    func shutdown() {
        for name in agentProcesses.keys { stopAgent(name) }
        stopRelay()
    }
}

enum HarnessError: Error, CustomStringConvertible {
    case timedOut(String, relayLog: String, agentLogs: [String])

    var description: String {
        switch self {
        case .timedOut(let what, let relay, let agents):
            "timed out waiting for \(what)\n--- relay log ---\n\(relay.suffix(4000))\n--- agent logs ---\n\(agents.map { String($0.suffix(3000)) }.joined(separator: "\n"))"
        }
    }
}

extension RelayHarness {
    /// The common case: a temporary directory, a repository `podinfo` with one commit
    /// (`app.yaml`), a relay packaging its `main`, and one agent granted it. Nothing started.
    static func single(_ prefix: String, agent: String = "edge", token: String = "t-edge") throws -> (TemporaryDirectory, TestRepo, RelayHarness) {
        let dir = try TemporaryDirectory(prefix: prefix)
        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: agent, token: token, sources: ["podinfo"])], dir: dir)
        return (dir, repo, harness)
    }
}

/// Two relays (A and B) with one CA, one source (podinfo, one commit) and one agent `edge`
/// (token t-edge), not started: for tests of an agent moving between relays.
struct RelayPair {
    let dirA: TemporaryDirectory
    let dirB: TemporaryDirectory
    let repo: TestRepo
    let a: RelayHarness
    let b: RelayHarness

    init(_ prefix: String) throws {
        dirA = try TemporaryDirectory(prefix: "\(prefix)-a")
        dirB = try TemporaryDirectory(prefix: "\(prefix)-b")
        repo = try TestRepo.create(at: dirA.appending("podinfo"))
        try repo.write("app.yaml", "a: 1\n")
        _ = try repo.commit("initial")
        let sources = [RelayHarness.Source(name: "podinfo", repo: repo, branch: "main")]
        let agents = [RelayHarness.Agent(name: "edge", token: "t-edge", sources: ["podinfo"])]
        a = try RelayHarness(sources: sources, agents: agents, dir: dirA)
        // B shares A's certificates (one CA for the agent to trust).
        try FileManager.default.copyItem(at: dirA.appending("tls"), to: dirB.appending("tls"))
        b = try RelayHarness(sources: sources, agents: agents, dir: dirB)
    }

    func shutdown() {
        a.shutdown()
        b.shutdown()
        dirA.remove()
        dirB.remove()
    }
}
