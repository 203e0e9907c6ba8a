import Foundation
import Testing

/// Grants reviewed in Git (relay.yaml `access:`): a real relay and agent, the access file in
/// a real Git repository; GitLab is the notify STAND-IN (it cannot run here).
@Suite struct AccessFileTests {
    @Test func anAccessFileCommitGrantsAndRevokesAtOnceAndAnInvalidOneKeepsTheLastGood() throws {
        let dir = try TemporaryDirectory(prefix: "access-file")
        defer { dir.remove() }
        let notify = try NotifyStandIn(dir: dir)
        defer { notify.stop() }
        try Data(notify.gitlabToken.utf8).write(to: dir.appending("gitlab.token"))
        func repo(_ name: String, _ path: String, _ contents: String) throws -> TestRepo {
            let repo = try TestRepo.create(at: dir.appending(name))
            try repo.write(path, contents)
            _ = try repo.commit("initial")
            return repo
        }
        let podinfo = try repo("podinfo", "apps/deploy.yaml", "kind: Deployment\n")
        let extra = try repo("extra", "apps/config.yaml", "kind: ConfigMap\n")
        let access = try repo("access", "relay-access.yaml", "agents:\n  - {name: edge, sources: [podinfo]}\n")
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: podinfo, branch: "main"),
                                                 .init(name: "extra", repo: extra, branch: "main"),
                                                 .init(name: "access", repo: access, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"])], dir: dir)
        harness.sourceExtraYAML["access"] = "gitlab: {url: \"\(notify.base)\", project: platform/access, tokenFile: \(dir.appending("gitlab.token").path)}"
        harness.relayExtraYAML = "access: {source: access, path: relay-access.yaml}\n"
        try harness.startRelay()
        defer { harness.shutdown() }
        try harness.startAgent("edge")
        func held() throws -> Set<String> { Set(try harness.published("edge").map(\.source)) }
        func granted() throws -> [String] {
            let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/agents", headers: ["Authorization: Bearer \(harness.readerToken)"])
            let agents = try JSONSerialization.jsonObject(with: answer.body) as? [[String: Any]] ?? []
            return (agents.first { $0["name"] as? String == "edge" }?["sources"] as? [String]) ?? []
        }
        func accessStatuses() throws -> [(sha: String, state: String, description: String)] {
            try notify.requests("gitlab").filter { $0["status"] as? Int == 201 }.compactMap { call in
                let params = call["params"] as? [String: Any]
                guard params?["name"] as? String == "relay/access" else { return nil }
                return (call["sha"] as? String ?? "", params?["state"] as? String ?? "", params?["description"] as? String ?? "")
            }
        }
        try harness.waitUntil("podinfo delivered", timeout: 30) { try held() == ["podinfo"] }
        let podinfoDigest = try #require(try harness.published("edge").first { $0.source == "podinfo" }).digest

        // A merge grants extra: it arrives without touching relay.yaml.
        try access.write("relay-access.yaml", "agents:\n  - {name: edge, sources: [podinfo, extra]}\n")
        let grant = try access.commit("grant extra to edge")
        try harness.pushWebhook(source: harness.sources[2])
        try harness.waitUntil("extra delivered after the grant", timeout: 30) { try held() == ["podinfo", "extra"] }
        try harness.waitUntil("success status on the granting commit", timeout: 30) {
            try accessStatuses().contains { $0.sha == grant && $0.state == "success" }
        }

        // A merge revokes podinfo: the relay stops serving it to edge at once.
        try access.write("relay-access.yaml", "agents:\n  - {name: edge, sources: [extra]}\n")
        _ = try access.commit("revoke podinfo")
        try harness.pushWebhook(source: harness.sources[2])
        try harness.waitUntil("podinfo revoked", timeout: 30) { try granted() == ["extra"] }
        _ = try harness.agentConfig("probe", token: "t-edge")
        let refused = try runProcess(Binaries.relayAgent, ["fetch", "--config", dir.appending("agent-probe.yaml").path, "--digest", podinfoDigest],
                                     allowFailure: true)
        #expect(refused.status != 0, "a revoked source must not be served: \(refused.stdout)")

        // An invalid file changes nothing and says why on its commit.
        try access.write("relay-access.yaml", "agents:\n  - {name: edge, sources: [nope]}\n")
        let bad = try access.commit("typo")
        try harness.pushWebhook(source: harness.sources[2])
        try harness.waitUntil("failed status on the invalid commit", timeout: 30) {
            try accessStatuses().contains { $0.sha == bad && $0.state == "failed" }
        }
        let failure = try #require(try accessStatuses().first { $0.sha == bad })
        #expect(failure.description.contains("relay-access.yaml: agents[0].sources[0]: unknown source 'nope'"), "\(failure.description)")
        #expect(try granted() == ["extra"], "the last good file stays in force")

        // The last good file survives a restart (relay.yaml still says podinfo).
        harness.stopRelay()
        try harness.startRelay()
        Thread.sleep(forTimeInterval: 2)
        #expect(try granted() == ["extra"])
    }
}
