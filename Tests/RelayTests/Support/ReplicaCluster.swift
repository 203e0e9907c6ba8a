import Foundation
import Provenance
@testable import RelayShared

/// Relay replicas on one real PostgreSQL, on loopback: each replica a real relay-server
/// process with its own data directory (no shared filesystem), the same relay.yaml sources
/// and agents, one CA and one signing key; real relay-agent processes listing every replica.
final class ReplicaCluster: @unchecked Sendable {
    let postgres: PostgresServer
    let base: TemporaryDirectory
    let repos: [TestRepo]
    let replicas: [RelayHarness]
    let agents: [RelayHarness.Agent]
    private var replicaDirs: [TemporaryDirectory] = []
    static let eventKey = "event-key"

    /// `replicas` relays, `agents` agents granted every source, sources `podinfo` and `infra`.
    init(_ prefix: String, replicas count: Int, agents agentCount: Int, extraYAML: (Int) -> String = { _ in "" }) throws {
        postgres = try PostgresServer(prefix: "\(prefix)-pg")
        base = try TemporaryDirectory(prefix: prefix)
        var repos: [TestRepo] = []
        for name in ["podinfo", "infra"] {
            let repo = try TestRepo.create(at: base.appending(name))
            try repo.write("\(name).yaml", "name: \(name)\n")
            _ = try repo.commit("initial")
            repos.append(repo)
        }
        self.repos = repos
        let sources = zip(["podinfo", "infra"], repos).map { RelayHarness.Source(name: $0.0, repo: $0.1, branch: "main") }
        agents = (0..<agentCount).map { RelayHarness.Agent(name: String(format: "edge-%02d", $0), token: "t-edge-\($0)", sources: ["podinfo", "infra"]) }
        let keyFile = base.appending("signing.key")
        _ = try SigningKey.loadOrCreate(path: keyFile.path)
        try Data("\(Self.eventKey)\n".utf8).write(to: base.appending("events.key"))
        var replicas: [RelayHarness] = []
        for index in 0..<count {
            let dir = try TemporaryDirectory(prefix: "\(prefix)-r\(index)")
            replicaDirs.append(dir)
            if let first = replicaDirs.first, index > 0 {
                try FileManager.default.copyItem(at: first.appending("tls"), to: dir.appending("tls"))
            }
            let harness = try RelayHarness(sources: sources, agents: agents, dir: dir)
            harness.relayExtraYAML = """
                database: {postgres: {host: 127.0.0.1, port: \(postgres.port), database: \(postgres.database), user: \(postgres.user)}}
                signing: {keyFile: \(keyFile.path)}
                replica: r\(index)

                """ + extraYAML(index)
            replicas.append(harness)
        }
        self.replicas = replicas
    }

    var tunnelPorts: [Int] { replicas.map(\.tunnelPort) }

    func startReplicas() throws {
        for replica in replicas { try replica.startRelay() }
    }

    /// Starts every agent (from the first replica's directory) listing every replica, each
    /// with a Flux events endpoint.
    func startAgents() throws {
        let harness = replicas[0]
        for agent in agents {
            try harness.serveFlux(agent.name, yaml: "flux: {events: {hmacTokenFile: \(base.appending("events.key").path)}}\n")
            try harness.startAgent(agent.name, relayPorts: tunnelPorts)
        }
    }

    /// `psql` on the replicas' database: one value.
    func sql(_ statement: String) throws -> String { try postgres.sql(statement) }

    /// The digest recorded for the newest commit of source `index`.
    func recordedDigest(source index: Int, commit: String) throws -> String {
        try sql("SELECT digest FROM revision WHERE source = '\(["podinfo", "infra"][index])' AND commit_ = '\(commit)' LIMIT 1")
    }

    /// How many agents acknowledged `digest` (a delivery is recorded once the agent verified
    /// and published it).
    func deliveries(of digest: String) throws -> Int { Int(try sql("SELECT count(*) FROM delivery WHERE digest = '\(digest)'")) ?? 0 }

    /// Agents the status API shows connected, by replica (`replica` of each agent).
    func connectedByReplica() throws -> [String: [String]] {
        let rows = try sql("SELECT name || '|' || COALESCE(replica, '') FROM agent WHERE connected = 1 ORDER BY name")
        var result: [String: [String]] = [:]
        for line in rows.split(separator: "\n") {
            let parts = line.split(separator: "|", omittingEmptySubsequences: false)
            result[String(parts[1]), default: []].append(String(parts[0]))
        }
        return result
    }

    /// `relay_agents_connected` of one replica (its live sessions).
    func liveSessions(_ index: Int) -> Int? {
        guard let text = try? HTTPProbe.request("http://127.0.0.1:\(replicas[index].httpPort)/metrics").text else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("relay_agents_connected ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) }
    }

    /// For a failed wait: which agents lack `digest`, and the end of their logs and the relays'.
    func diagnose(_ digest: String) -> String {
        let have = Set(((try? sql("SELECT agent FROM delivery WHERE digest = '\(digest)'")) ?? "").split(separator: "\n").map(String.init))
        var text = "missing \(digest): "
        for agent in agents where !have.contains(agent.name) {
            let replica = (try? sql("SELECT COALESCE(replica, '') || ' connected=' || connected FROM agent WHERE name = '\(agent.name)'")) ?? "?"
            text += "\n== \(agent.name) (\(replica)):\n" + replicas[0].agentLog(agent.name).split(separator: "\n").suffix(6).joined(separator: "\n")
        }
        for (index, replica) in replicas.enumerated() {
            text += "\n== relay r\(index):\n" + replica.relayLog.split(separator: "\n").filter { $0.contains("error") || $0.contains("warning") }
                .suffix(8).joined(separator: "\n")
        }
        return text
    }

    func shutdown() {
        for replica in replicas { replica.shutdown() }
        postgres.shutdown()
        for dir in replicaDirs { dir.remove() }
        base.remove()
    }
}
