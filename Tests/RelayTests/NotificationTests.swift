import Foundation
import Testing

/// GitLab commit statuses, Slack and JSON webhook notifications from Flux status. GitLab and
/// Slack are STAND-INS (they cannot run here) that check every request against the
/// documented APIs; the Kubernetes API is the kube-apiserver stand-in.
@Suite struct NotificationTests {
    @Test func statusChangesBecomeGitLabStatusesAndFailuresAndRecoveriesAreAnnouncedEvenAfterAnOutage() throws {
        var notify: NotifyStandIn?
        let setup = try StatusFeedTests.Setup("notify") { dir, harness in
            let standIn = try NotifyStandIn(dir: dir)
            notify = standIn
            try Data(standIn.gitlabToken.utf8).write(to: dir.appending("gitlab.token"))
            try Data("\(standIn.base)/services/T0001/B0001/abcdefSECRET".utf8).write(to: dir.appending("slack.url"))
            harness.sourceExtraYAML["podinfo"] = "gitlab: {url: \"\(standIn.base)\", project: group/podinfo, tokenFile: \(dir.appending("gitlab.token").path)}"
            harness.relayExtraYAML = """
                publicURL: https://relay.example.com/
                notifications:
                  slack: [{webhookURLFile: \(dir.appending("slack.url").path)}]
                  webhooks: [{url: "\(standIn.base)/hook/relay"}]

                """
        }
        let standIn = try #require(notify)
        defer { setup.shutdown(); standIn.stop() }
        let revision = "main@sha1:\(setup.commit)"
        /// States posted for the first commit (a leading `pending` — delivered before Flux
        /// reported anything — depends on timing and is left out).
        func gitlabStates(_ sha: String? = nil) throws -> [String] {
            let states = try standIn.requests("gitlab").filter { $0["status"] as? Int == 201 && $0["sha"] as? String == (sha ?? setup.commit) }
                .compactMap { ($0["params"] as? [String: Any])?["state"] as? String }
            return sha == nil && states.first == "pending" ? Array(states.dropFirst()) : states
        }
        func setStatus(_ status: [String: Any]) throws {
            try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations",
                                    namespace: "flux-system", name: "podinfo", status: status)
        }

        // Progressing with the new revision → running; applied → success.
        try setup.harness.waitUntil("running") { try gitlabStates() == ["running"] }
        try setStatus(KubeStandIn.readyStatus(revision: revision))
        try setup.harness.waitUntil("success") { try gitlabStates() == ["running", "success"] }

        // GitLab and Slack go down; the cluster fails; a new commit still reaches the agent.
        try standIn.control("POST", "down", ["seconds": 4])
        try setStatus(KubeStandIn.failingStatus(revision: revision, message: "Deployment/podinfo: 0/2 replicas ready"))
        try setup.repo.write("apps/extra.yaml", "kind: ConfigMap\n")
        let second = try setup.repo.commit("second")
        try setup.harness.pushWebhook(source: setup.harness.sources[0])
        try setup.harness.waitUntil("delivery during the outage", timeout: 10) {
            try setup.harness.published("edge").contains { $0.revision == "main@sha1:\(second)" }
        }
        #expect(try standIn.requests("gitlab").contains { $0["status"] as? Int == 503 }, "the outage was hit")
        // The new commit is delivered but no Flux object reports it yet: pending.
        try setup.harness.waitUntil("pending for the delivered commit", timeout: 30) { try gitlabStates(second) == ["pending"] }
        // After the outage: failed arrives, then the recovery.
        try setup.harness.waitUntil("failed after the outage", timeout: 30) { try gitlabStates() == ["running", "success", "failed"] }
        try setStatus(KubeStandIn.readyStatus(revision: revision))
        try setup.harness.waitUntil("recovery", timeout: 30) {
            try gitlabStates() == ["running", "success", "failed", "success"]
                && standIn.requests("slack").filter { $0["status"] as? Int == 200 }.count == 2
                && standIn.requests("webhook").filter { $0["status"] as? Int == 200 }.count == 2
        }

        // The exact GitLab calls.
        let calls = try standIn.requests("gitlab").filter { $0["status"] as? Int == 201 && $0["sha"] as? String == setup.commit }
        for call in calls {
            #expect(call["path"] as? String == "/api/v4/projects/group%2Fpodinfo/statuses/\(setup.commit)")
            #expect(call["project"] as? String == "group/podinfo")
            #expect((call["headers"] as? [String: String])?["private-token"] == standIn.gitlabToken)
            let params = try #require(call["params"] as? [String: Any])
            #expect(params["name"] as? String == "relay/edge/flux-system/podinfo")
            #expect(params["target_url"] as? String == "https://relay.example.com/")
            let description = params["description"] as? String ?? ""
            #expect(params["state"] as? String == "pending" ? description.hasPrefix("delivered to edge") : description.hasPrefix("Kustomization"),
                    "\(description)")
        }
        // Slack: one failure, one recovery, as incoming-webhook JSON.
        let slack = try standIn.requests("slack").filter { $0["status"] as? Int == 200 }
        #expect(slack.allSatisfy { $0["path"] as? String == "/services/T0001/B0001/abcdefSECRET" })
        let texts = slack.compactMap { ($0["body"] as? [String: Any])?["text"] as? String }
        #expect(texts.count == 2)
        #expect(texts.first?.contains("0/2 replicas ready") == true && texts.first?.contains("edge") == true)
        #expect(texts.last?.contains("recovered") == true)
        // The generic webhook: typed JSON events.
        let hooks = try standIn.requests("webhook").filter { $0["status"] as? Int == 200 }.compactMap { $0["body"] as? [String: Any] }
        #expect(hooks.map { $0["type"] as? String } == ["failure", "recovery"])
        #expect(hooks.first?["agent"] as? String == "edge")
        #expect(hooks.first?["source"] as? String == "podinfo")
        #expect(hooks.first?["revision"] as? String == revision)
    }
}
