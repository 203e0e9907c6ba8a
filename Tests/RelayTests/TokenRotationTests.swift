import Foundation
import Testing

/// `relay-server agents`: create an agent, rotate its token with the agent connected (no
/// disconnect: the agent reauthenticates on its open stream), revoke the old token.
@Suite struct TokenRotationTests {
    @Test func rotatingWithTheAgentConnectedCausesNoDisconnectAndTheOldTokenIsRefusedAfterRevocation() throws {
        let (dir, repo, harness) = try RelayHarness.single("rotation", agent: "from-config", token: "t-config")
        defer { harness.shutdown(); dir.remove() }
        try harness.startRelay()
        let relayConfig = dir.appending("relay.yaml").path
        func agents(_ arguments: [String], allowFailure: Bool = false) throws -> ProcessOutput {
            try runProcess(Binaries.relayServer, ["agents"] + arguments + ["--config", relayConfig], allowFailure: allowFailure)
        }

        // Create: the token is printed once; only its hash is stored.
        let first = try agents(["create", "edge", "--sources", "podinfo"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(first.count >= 32)
        #expect(try agents(["create", "edge"], allowFailure: true).status == 2)
        #expect(try agents(["create", "x", "--sources", "nope"], allowFailure: true).stderr.contains("no source named 'nope'"))
        try harness.startAgent("edge", token: first + "\n")
        try harness.waitUntil("artifact at the CLI-made agent") { try !harness.published("edge").isEmpty }
        let digest = try #require(try harness.published("edge").first).digest

        // A second client with the first token (relay-agent fetch, diagnostics).
        _ = try harness.agentConfig("probe", token: first)
        func probe() throws -> ProcessOutput {
            try runProcess(Binaries.relayAgent, ["fetch", "--config", dir.appending("agent-probe.yaml").path, "--digest", digest],
                           allowFailure: true)
        }
        #expect(try probe().status == 0)

        // Rotate: two valid tokens; the agent gets the new one in its token file.
        let second = try agents(["rotate", "edge"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(second != first)
        #expect(try probe().status == 0, "the old token stays valid until revoked")
        let list = try agents(["list", "--json"]).stdout
        let listed = try #require((try JSONSerialization.jsonObject(with: Data(list.utf8)) as? [[String: Any]])?.first { $0["name"] as? String == "edge" })
        #expect((listed["tokens"] as? [Any])?.count == 2)
        #expect(!list.contains(first) && !list.contains(second), "tokens are never shown again")
        try Data((second + "\n").utf8).write(to: dir.appending("edge.token"))
        try harness.waitUntil("relay saw the agent switch tokens") { harness.relayLog.contains("agent switched to its new token") }

        // Revoke the old token: refused at once; the agent, on its new token, carries on.
        #expect(try agents(["revoke", "edge"]).stdout.contains("revoked 1 token"))
        let refused = try probe()
        #expect(refused.status == 3)
        #expect(refused.stdout.contains("unauthenticated") || refused.stdout.lowercased().contains("token"), "\(refused.stdout)")
        try repo.write("app.yaml", "a: 2\n")
        let commit = try repo.commit("second")
        try harness.pushWebhook(source: harness.sources[0])
        try harness.waitUntil("delivery after the revocation") {
            try harness.published("edge").contains { $0.revision == "main@sha1:\(commit)" }
        }
        // No disconnect at any point: one session from start to end.
        let log = harness.agentLog("edge")
        #expect(log.components(separatedBy: "connected to relay").count == 2, "\(log)")
        #expect(!log.contains("tunnel down") && !log.contains("relay is draining"), "\(log)")
        let edgeSessions = harness.relayLog.split(separator: "\n").filter { $0.contains("agent connected") && $0.contains("agent=edge ") }
        #expect(edgeSessions.count == 1, "\(harness.relayLog)")

        // The last token cannot be revoked; config-managed agents are changed in relay.yaml.
        #expect(try agents(["revoke", "edge"], allowFailure: true).stderr.contains("no other token"))
        #expect(try agents(["rotate", "from-config"], allowFailure: true).stderr.contains("relay.yaml"))
        // Delete: the agent's calls are refused from then on.
        #expect(try agents(["delete", "edge"]).status == 0)
        _ = try harness.agentConfig("probe", token: second)
        #expect(try probe().status == 3)
    }
}
