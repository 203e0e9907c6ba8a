import Foundation
import Testing
import Yams

/// Rollouts governed the way GitLab users expect, end to end with a real relay and real
/// agents: waves over six clusters, deploy freezes with releases, GitLab deployments,
/// `relay-server wait` and `diff`. GitLab is the notify STAND-IN (it cannot run here; it
/// follows GitLab's documented API), the Kubernetes API the kube-apiserver STAND-IN written to
/// the way kustomize-controller writes status.
@Suite struct RolloutTests {
    /// A relay, one Git source and agents each with its own cluster (kube stand-in) whose
    /// Kustomization `podinfo` consumes the source.
    final class Fleet: @unchecked Sendable {
        let dir: TemporaryDirectory
        let repo: TestRepo
        let harness: RelayHarness
        var apis: [String: KubeStandIn] = [:]
        let notify: NotifyStandIn
        var commits: [String] = []
        let clockFile: URL
        var base: String { "http://127.0.0.1:\(harness.httpPort)" }

        init(_ prefix: String, agents: [String], clusters: Bool, sourceYAML: String = "", relayYAML: (NotifyStandIn, TemporaryDirectory) -> String = { _, _ in "" }) throws {
            dir = try TemporaryDirectory(prefix: prefix)
            notify = try NotifyStandIn(dir: dir)
            try Data(notify.gitlabToken.utf8).write(to: dir.appending("gitlab.token"))
            try Data("admin-secret\n".utf8).write(to: dir.appending("admin.token"))
            try Data("reader-secret\n".utf8).write(to: dir.appending("reader.token"))
            clockFile = dir.appending("clock-offset")
            try Data("0".utf8).write(to: clockFile)
            repo = try TestRepo.create(at: dir.appending("podinfo"))
            try repo.write("apps/deploy.yaml", "kind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 1\n")
            try repo.write("apps/service.yaml", "kind: Service\n")
            try repo.write("README.md", "podinfo\n")
            try repo.write("docs/logo.png", "PNG one\n")
            commits.append(try repo.commit("initial"))
            harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: agents.map { .init(name: $0, token: "t-\($0)", sources: ["podinfo"]) }, dir: dir)
            harness.sourceExtraYAML["podinfo"] = "gitlab: {url: \"\(notify.base)\", project: group/podinfo, tokenFile: \(dir.appending("gitlab.token").path)\(sourceYAML)}"
            harness.relayExtraYAML = "admins:\n  - {name: alice, tokenFile: \(dir.appending("admin.token").path)}\n" + relayYAML(notify, dir)
            for agent in agents where clusters {
                let api = try KubeStandIn(dir: dir)
                apis[agent] = api
                let kubeconfig = dir.appending("kubeconfig-\(agent)")
                try api.writeKubeconfig(to: kubeconfig)
                let port = try LoopbackPort.free()
                try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://127.0.0.1:\(port)/podinfo"))
                try api.seed(KubeStandIn.kustomization("podinfo", source: "podinfo", status: KubeStandIn.progressingStatus()))
                try harness.serveFlux(agent, port: port, yaml: """
                    flux:
                      url: http://127.0.0.1:\(port)
                      status: {watch: true}
                      kubernetes: {kubeconfig: \(kubeconfig.path)}

                    """)
            }
            try harness.startRelay(environment: ["RELAY_TEST_CLOCK_OFFSET_FILE": clockFile.path])
            for agent in agents { try harness.startAgent(agent) }
        }

        func revision(_ index: Int) -> String { "main@sha1:\(commits[index])" }

        /// The revision the agent serves Flux as current ("" for none).
        func current(_ agent: String) throws -> String {
            try harness.published(agent).first { $0.source == "podinfo" }?.revision ?? ""
        }

        func newCommit(_ path: String, _ contents: String) throws {
            try repo.write(path, contents)
            commits.append(try repo.commit("change \(path)"))
            _ = try harness.pushWebhook(source: harness.sources[0])
        }

        func setStatus(_ agent: String, _ status: [String: Any]) throws {
            try apis[agent]!.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations",
                                       namespace: "flux-system", name: "podinfo", status: status)
        }

        func ready(_ agents: [String], _ index: Int) throws {
            for agent in agents { try setStatus(agent, KubeStandIn.readyStatus(revision: revision(index))) }
        }

        func rollout() throws -> [String: Any] {
            let answer = try HTTPProbe.request(base + "/api/v1/sources/podinfo/rollout", headers: ["Authorization: Bearer \(harness.readerToken)"])
            return (try? JSONSerialization.jsonObject(with: answer.body) as? [String: Any]) ?? [:]
        }

        func agentView(_ agent: String) throws -> [String: Any] {
            ((try rollout()["agents"] as? [[String: Any]]) ?? []).first { $0["agent"] as? String == agent } ?? [:]
        }

        /// Moves the relay's clock to `date` (RELAY_TEST_CLOCK_OFFSET_FILE).
        func setClock(_ date: Date) throws {
            try Data(String(date.timeIntervalSinceNow).utf8).write(to: clockFile, options: .atomic)
        }

        func wait(_ arguments: [String]) throws -> ProcessOutput {
            try runProcess(Binaries.relayServer, ["wait", "--relay", base, "--token-file", dir.appending("reader.token").path,
                                                  "--source", "podinfo"] + arguments, timeout: 90, allowFailure: true)
        }

        func shutdown() {
            harness.shutdown()
            for api in apis.values { api.stop() }
            notify.stop()
            dir.remove()
        }
    }

    static func utc(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    @Test func threeWavesOverSixClustersHaltOnAFailureAndRollBack() throws {
        let canaries = ["canary-1", "canary-2"], eu = ["eu-1", "eu-2"], us = ["us-1", "us-2"]
        let fleet = try Fleet("rollout-waves", agents: canaries + eu + us, clusters: true,
                              sourceYAML: "}, rollout: {rollbackOnFailure: true, waves: [{agents: [canary-*]}, {agents: [eu-*], soak: 3s}, {agents: [\"*\"]}]") { notify, _ in
            "notifications:\n  webhooks: [{url: \"\(notify.base)/hook/relay\"}]\n"
        }
        defer { fleet.shutdown() }
        let h = fleet.harness
        // Revision 1 reaches wave 1 only.
        try h.waitUntil("canaries get revision 1", timeout: 30) { try canaries.allSatisfy { try fleet.current($0) == fleet.revision(0) } }
        #expect(try (eu + us).allSatisfy { try fleet.current($0).isEmpty })
        #expect(try fleet.agentView("eu-1")["state"] as? String == "held")
        #expect(((try fleet.agentView("us-1")["hold"] as? [String: Any])?["kind"]) as? String == "wave")
        // Canaries healthy → wave 2; eu healthy → wave 3 only after the 3 s soak.
        try fleet.ready(canaries, 0)
        try h.waitUntil("eu gets revision 1", timeout: 30) { try eu.allSatisfy { try fleet.current($0) == fleet.revision(0) } }
        #expect(try us.allSatisfy { try fleet.current($0).isEmpty })
        try fleet.ready(eu, 0)
        let euHealthy = Date()
        try h.waitUntil("us gets revision 1", timeout: 30) { try us.allSatisfy { try fleet.current($0) == fleet.revision(0) } }
        #expect(Date().timeIntervalSince(euHealthy) >= 3, "wave 3 started before wave 2's soak ended")
        try fleet.ready(us, 0)
        try h.waitUntil("rollout complete", timeout: 30) { try fleet.rollout()["state"] as? String == "complete" }
        // The pipeline gate: every agent healthy with revision 1 → 0.
        let done = try fleet.wait(["--revision", String(fleet.commits[0].prefix(10)), "--timeout", "30s"])
        #expect(done.status == 0, "\(done.stdout)\(done.stderr)")

        // Revision 2: canaries healthy, then eu-1 fails.
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 2\n")
        try h.waitUntil("canaries get revision 2", timeout: 30) { try canaries.allSatisfy { try fleet.current($0) == fleet.revision(1) } }
        #expect(try (eu + us).allSatisfy { try fleet.current($0) == fleet.revision(0) })
        try fleet.ready(canaries, 1)
        try h.waitUntil("eu gets revision 2", timeout: 30) { try eu.allSatisfy { try fleet.current($0) == fleet.revision(1) } }
        try fleet.setStatus("eu-1", KubeStandIn.failingStatus(revision: fleet.revision(1), message: "Deployment/podinfo: 0/2 replicas ready"))
        try h.waitUntil("halted", timeout: 30) { try fleet.rollout()["state"] as? String == "halted" }
        #expect(try fleet.rollout()["failedAgent"] as? String == "eu-1")
        // rollbackOnFailure: wave 2 returns to revision 1; wave 3 never leaves it.
        try h.waitUntil("eu rolled back", timeout: 30) { try eu.allSatisfy { try fleet.current($0) == fleet.revision(0) } }
        Thread.sleep(forTimeInterval: 3)
        #expect(try us.allSatisfy { try fleet.current($0) == fleet.revision(0) }, "wave 3 must keep the previous revision")
        #expect(try canaries.allSatisfy { try fleet.current($0) == fleet.revision(1) })
        // The halt is announced with the failing cluster and Flux's message.
        try h.waitUntil("halt notification", timeout: 30) {
            try fleet.notify.requests("webhook").contains { ($0["body"] as? [String: Any])?["type"] as? String == "rollout-halted" }
        }
        let halt = try #require(try fleet.notify.requests("webhook").compactMap { $0["body"] as? [String: Any] }.first { $0["type"] as? String == "rollout-halted" })
        #expect(halt["agent"] as? String == "eu-1")
        #expect((halt["message"] as? String)?.contains("0/2 replicas ready") == true)
        // Gates: eu with revision 2 → 1 (and says who failed); us → 2 (timed out, held).
        let failed = try fleet.wait(["--revision", fleet.revision(1), "--agents", "eu-*", "--timeout", "30s"])
        #expect(failed.status == 1, "\(failed.stdout)\(failed.stderr)")
        #expect(failed.stdout.contains("FAILED eu-1") && failed.stdout.contains("0/2 replicas ready"))
        let timedOut = try fleet.wait(["--revision", fleet.revision(1), "--agents", "us-*", "--timeout", "3s"])
        #expect(timedOut.status == 2, "\(timedOut.stdout)\(timedOut.stderr)")
        #expect(timedOut.stdout.contains("us-1") && timedOut.stdout.contains("held"))

        // A newer revision supersedes the halted one, starting again at wave 1.
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 3\n")
        try h.waitUntil("canaries get revision 3", timeout: 30) { try canaries.allSatisfy { try fleet.current($0) == fleet.revision(2) } }
        #expect(try fleet.rollout()["state"] as? String == "rolling")
        #expect(try (eu + us).allSatisfy { try fleet.current($0) == fleet.revision(0) })
    }

    @Test func aFreezeHoldsNewRevisionsForTheFrozenAgentsUntilReleasedOrItEnds() throws {
        let fleet = try Fleet("rollout-freeze", agents: ["edge-1", "frozen-1"], clusters: false) { _, _ in
            """
            freezes:
              - {name: weekend, start: "0 23 * * FRI", end: "0 7 * * MON", timeZone: UTC, agents: [frozen-*]}

            """
        }
        defer { fleet.shutdown() }
        let h = fleet.harness
        try fleet.setClock(Self.utc("2026-12-09T12:00:00Z"))  // a Wednesday: no freeze
        try h.waitUntil("both get revision 1", timeout: 30) {
            try fleet.current("edge-1") == fleet.revision(0) && fleet.current("frozen-1") == fleet.revision(0)
        }
        // Saturday noon: frozen. Revision 2 is packaged and reaches edge-1 only.
        try fleet.setClock(Self.utc("2026-12-12T12:00:00Z"))
        Thread.sleep(forTimeInterval: 1.5)
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# two\n")
        try h.waitUntil("edge-1 gets revision 2", timeout: 30) { try fleet.current("edge-1") == fleet.revision(1) }
        try h.waitUntil("frozen-1 shown as held", timeout: 30) { try fleet.agentView("frozen-1")["state"] as? String == "held" }
        let hold = try #require(try fleet.agentView("frozen-1")["hold"] as? [String: Any])
        #expect(hold["kind"] as? String == "freeze")
        #expect((hold["reason"] as? String)?.contains("weekend") == true)
        #expect((hold["until"] as? String)?.hasPrefix("2026-12-14T07:00:00") == true, "\(hold)")
        Thread.sleep(forTimeInterval: 2)
        #expect(try fleet.current("frozen-1") == fleet.revision(0), "a frozen agent must keep its revision")
        // GitLab: pending on the commit, saying why and until when.
        try h.waitUntil("pending status for the held agent", timeout: 30) {
            try fleet.notify.requests("gitlab").contains { call in
                let params = call["params"] as? [String: Any]
                return call["status"] as? Int == 201 && call["sha"] as? String == fleet.commits[1]
                    && params?["name"] as? String == "relay/frozen-1/rollout" && params?["state"] as? String == "pending"
                    && (params?["description"] as? String)?.contains("deploy freeze 'weekend' until 2026-12-14T07:00:00Z") == true
            }
        }
        // An operator pushes revision 2 through: recorded with who and why.
        let release = try runProcess(Binaries.relayServer, ["release", "--config", h.dir.appending("relay.yaml").path, "--source", "podinfo",
                                                            "--agent", "frozen-1", "--reason", "hotfix for CVE", "--by", "bob"], timeout: 30)
        #expect(release.stdout.contains("released \(fleet.revision(1))"))
        try h.waitUntil("frozen-1 gets the released revision", timeout: 30) { try fleet.current("frozen-1") == fleet.revision(1) }
        let recorded = try #require(try fleet.agentView("frozen-1")["release"] as? [String: Any])
        #expect(recorded["by"] as? String == "bob" && recorded["reason"] as? String == "hotfix for CVE")

        // Revision 3 is held again (a release is for one revision). A reader may not release;
        // an admin may, through the API.
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# three\n")
        try h.waitUntil("edge-1 gets revision 3", timeout: 30) { try fleet.current("edge-1") == fleet.revision(2) }
        Thread.sleep(forTimeInterval: 2)
        #expect(try fleet.current("frozen-1") == fleet.revision(1))
        let body = try JSONSerialization.data(withJSONObject: ["agent": "frozen-1", "reason": "customer escalation"])
        let asReader = try HTTPProbe.request(fleet.base + "/api/v1/sources/podinfo/release", method: "POST",
                                             headers: ["Authorization: Bearer \(h.readerToken)", "Content-Type: application/json"], body: body)
        #expect(asReader.status == 403)
        // An admin naming a revision that is no longer the newest releases nothing (409); an
        // admin token in the URL is refused.
        let stale = try HTTPProbe.request(fleet.base + "/api/v1/sources/podinfo/release", method: "POST",
                                          headers: ["Authorization: Bearer admin-secret", "Content-Type: application/json"],
                                          body: try JSONSerialization.data(withJSONObject: ["agent": "frozen-1", "reason": "x", "revision": fleet.commits[1]]))
        #expect(stale.status == 409, "\(stale.text)")
        let inURL = try HTTPProbe.request(fleet.base + "/api/v1/sources/podinfo/release?access_token=admin-secret", method: "POST",
                                          headers: ["Content-Type: application/json"], body: body)
        #expect(inURL.status == 401)
        let asAdmin = try HTTPProbe.request(fleet.base + "/api/v1/sources/podinfo/release", method: "POST",
                                            headers: ["Authorization: Bearer admin-secret", "Content-Type: application/json"], body: body)
        #expect(asAdmin.status == 200, "\(asAdmin.text)")
        #expect(asAdmin.text.contains("\"by\":\"alice\""))
        try h.waitUntil("frozen-1 gets revision 3", timeout: 30) { try fleet.current("frozen-1") == fleet.revision(2) }

        // Revision 4 waits for the end of the freeze (Monday 07:00 UTC), then arrives by itself.
        try fleet.repo.write("docs/logo.png", "PNG two\n")
        try fleet.newCommit("apps/extra.yaml", "kind: ConfigMap\n")
        try h.waitUntil("edge-1 gets revision 4", timeout: 30) { try fleet.current("edge-1") == fleet.revision(3) }
        Thread.sleep(forTimeInterval: 2)
        #expect(try fleet.current("frozen-1") == fleet.revision(2))
        // The page's rollout view (headless Chromium) shows the held cell, then the cell change
        // without a reload when the freeze ends.
        let python = try InteropTests.python()
        let chromium = try #require(findExecutable("chromium"), "chromium is installed by scripts/setup.sh")
        let artifacts = InteropTests.repoRoot.appendingPathComponent(".test-artifacts")
        try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
        let ready = fleet.dir.appending("page-ready"), pageLog = fleet.dir.appending("page-check.log")
        let check = try BackgroundProcess(name: "page-check", executable: python, arguments: [
            StatusFeedTests.fixture("page/page_check.py"), "--url", "\(fleet.base)/?access_token=\(h.readerToken)",
            "--selector", "#rollout-podinfo-frozen-1", "--attribute", "data-state", "--initial", "held", "--final", "pending",
            "--ready-file", ready.path, "--screenshot", artifacts.appendingPathComponent("rollout-page.png").path,
            "--timeout", "30", "--chromium", chromium,
        ], logFile: pageLog)
        defer { check.stop() }
        try h.waitUntil("page shows the held cell", timeout: 40) { FileManager.default.fileExists(atPath: ready.path) }
        try fleet.setClock(Self.utc("2026-12-14T07:00:30Z"))
        try h.waitUntil("frozen-1 gets revision 4 when the freeze ends", timeout: 30) { try fleet.current("frozen-1") == fleet.revision(3) }
        #expect(try fleet.agentView("frozen-1")["hold"] == nil)
        try h.waitUntil("page check finished", timeout: 40) { (try? String(contentsOf: pageLog, encoding: .utf8))?.contains("{\"ok\"") == true }
        let line = try #require(try String(contentsOf: pageLog, encoding: .utf8).split(separator: "\n").last { $0.hasPrefix("{\"ok\"") })
        let page = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(page["ok"] as? Bool == true && page["reloaded"] as? Bool == false, "\(page)")
        #expect((page["text"] as? String)?.contains("frozen-1") == true, "\(page["text"] ?? "")")
        #expect((page["consoleErrors"] as? [Any])?.isEmpty == true, "\(page["consoleErrors"] ?? "")")

        // diff between revisions 1 and 4 equals git's diff of the two trees over what the artifacts hold.
        let diff = try runProcess(Binaries.relayServer, ["diff", "--config", h.dir.appending("relay.yaml").path, "--source", "podinfo",
                                                         "--from", fleet.commits[0], "--to", fleet.revision(3)], timeout: 30)
        let paths = try runProcess("/usr/bin/env", ["git", "-C", fleet.repo.url.path, "ls-tree", "-r", "--name-only", fleet.commits[3]]).stdout
            .split(separator: "\n").map(String.init)
            .filter { !$0.hasSuffix(".png") }  // Flux's default ignore rules leave images out of artifacts
        let git = try runProcess("/usr/bin/env", ["git", "-C", fleet.repo.url.path, "-c", "core.quotepath=off", "diff", "--no-color",
                                                  "--no-renames", "--no-ext-diff", "-U3", fleet.commits[0], fleet.commits[3], "--"] + paths,
                                 allowFailure: true).stdout
        #expect(!diff.stdout.isEmpty)
        #expect(diff.stdout == git)
        let api = try HTTPProbe.request(fleet.base + "/api/v1/sources/podinfo/diff?from=\(fleet.commits[0])&to=\(fleet.commits[3])",
                                        headers: ["Authorization: Bearer \(h.readerToken)"])
        #expect(api.status == 200 && api.text == git)
    }

    @Test func deliveriesBecomeGitLabDeploymentsInTheAgentsEnvironment() throws {
        let fleet = try Fleet("rollout-deployments", agents: ["edge"], clusters: true, sourceYAML: """
            , environments: [{agents: [edge], name: "production/{agent}", tier: production, clusterAgentID: 7, kubernetesNamespace: flux-system, \
            fluxResourcePath: kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/podinfo}]
            """)
        defer { fleet.shutdown() }
        let h = fleet.harness
        /// The deployment calls GitLab accepted or refused, in order: method, deployment id (PUT), status, sha (POST).
        func calls() throws -> [String] {
            try fleet.notify.requests("gitlab").filter { ($0["path"] as? String)?.contains("/deployments") == true && $0["injected"] is NSNull }
                .map { call in
                    let params = call["params"] as? [String: Any] ?? [:]
                    let path = call["path"] as? String ?? ""
                    let code = call["status"] as? Int ?? 0
                    if call["method"] as? String == "POST" {
                        return "POST \(params["status"] ?? "") \(params["environment"] ?? "") \(params["sha"] ?? "") ref=\(params["ref"] ?? "") tag=\(params["tag"] ?? "") → \(code)"
                    }
                    return "\(call["method"] ?? "") \(path.split(separator: "/").last ?? "") \(params["status"] ?? "") → \(code)"
                }
        }
        func deployments() throws -> [[String: Any]] {
            (try fleet.notify.control("GET", "gitlab/deployments") as? [[String: Any]]) ?? []
        }
        func id(_ sha: String) throws -> Int {
            try deployments().first { $0["sha"] as? String == sha }?["id"] as? Int ?? -1
        }
        let c = fleet.commits
        try h.waitUntil("deployment running for revision 1", timeout: 30) { try calls().count == 1 }
        // The environment was created first, with the fields that make GitLab show the Flux objects.
        let environments = (try fleet.notify.control("GET", "gitlab/environments") as? [[String: Any]]) ?? []
        let environment = try #require(environments.first { $0["name"] as? String == "production/edge" })
        #expect(environment["tier"] as? String == "production")
        #expect(environment["kubernetes_namespace"] as? String == "flux-system")
        #expect(environment["flux_resource_path"] as? String == "kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/podinfo")
        try fleet.ready(["edge"], 0)
        try h.waitUntil("success", timeout: 30) { try calls().count == 2 }

        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# two\n")
        try h.waitUntil("running for revision 2", timeout: 30) { try calls().count == 3 }
        try fleet.setStatus("edge", KubeStandIn.failingStatus(revision: fleet.revision(1), message: "Deployment/podinfo: 0/2 replicas ready"))
        try h.waitUntil("failed", timeout: 30) { try calls().count == 4 }

        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# three\n")
        try h.waitUntil("revision 3 delivered", timeout: 30) { try fleet.current("edge") == fleet.revision(2) && calls().count == 5 }
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# four\n")
        try h.waitUntil("revision 3 superseded", timeout: 30) { try calls().count == 7 }
        let c3 = fleet.commits[3]
        #expect(try calls() == [
            "POST running production/edge \(c[0]) ref=main tag=0 → 201",
            "PUT \(try id(c[0])) success → 200",
            "POST running production/edge \(fleet.commits[1]) ref=main tag=0 → 201",
            "PUT \(try id(fleet.commits[1])) failed → 200",
            "POST running production/edge \(fleet.commits[2]) ref=main tag=0 → 201",
            "PUT \(try id(fleet.commits[2])) canceled → 200",
            "POST running production/edge \(c3) ref=main tag=0 → 201",
        ])
        #expect(try deployments().map { $0["status"] as? String } == ["success", "failed", "canceled", "running"])
        // GitLab refuses updates of deployments made by CI jobs (403): refused is dropped, not retried.
        try fleet.notify.control("POST", "gitlab/deployments/\(try id(c3))/ci")
        try fleet.ready(["edge"], 3)
        try h.waitUntil("the refused update", timeout: 30) { try calls().last == "PUT \(try id(c3)) success → 403" }
        Thread.sleep(forTimeInterval: 3)
        #expect(try calls().filter { $0.hasPrefix("PUT \(try id(c3))") }.count == 1)
    }

    /// deploy/examples/gitlab-ci.yml: the merge-request job's commands, run as the job runs
    /// them, print git's diff of the two commits over what the artifacts hold; every flag the
    /// rollout job passes to `relay-server wait` exists.
    @Test func theGitLabCIExampleDiffsAMergeRequestAndGatesTheRollout() throws {
        let file = InteropTests.repoRoot.appendingPathComponent("deploy/examples/gitlab-ci.yml")
        let pipeline = try #require(try Yams.load(yaml: String(contentsOf: file, encoding: .utf8)) as? [String: Any])
        let diffJob = try #require(pipeline["relay-diff"] as? [String: Any])
        let rolloutJob = try #require(pipeline["relay-rollout"] as? [String: Any])
        let diffRule = ((diffJob["rules"] as? [[String: Any]])?.first?["if"] as? String) ?? ""
        #expect(diffRule.contains("merge_request_event"))
        let rolloutRule = ((rolloutJob["rules"] as? [[String: Any]])?.first?["if"] as? String) ?? ""
        #expect(rolloutRule.contains("CI_DEFAULT_BRANCH"))

        let dir = try TemporaryDirectory(prefix: "gitlab-ci-example")
        defer { dir.remove() }
        let repo = try TestRepo.create(at: dir.appending("project"))
        try repo.write("apps/deploy.yaml", "kind: Deployment\nspec:\n  replicas: 1\n")
        try repo.write("docs/logo.png", "PNG one\n")
        let base = try repo.commit("base")
        try repo.write("apps/deploy.yaml", "kind: Deployment\nspec:\n  replicas: 3\n")
        try repo.write("apps/config.yaml", "kind: ConfigMap\n")
        try repo.write("docs/logo.png", "PNG two\n")
        let head = try repo.commit("head")
        let script = try #require(diffJob["script"] as? [String])
        let commands = script.prefix { !$0.contains("curl") && !$0.contains("body=") }.joined(separator: "\n")
        #expect(commands.contains("relay-server diff"))
        let work = try dir.subdirectory("job")
        let binaries = URL(fileURLWithPath: Binaries.relayServer).deletingLastPathComponent().path
        let run = try runProcess("/bin/bash", ["-euo", "pipefail", "-c", "cd \(work.path) && " + commands.replacingOccurrences(of: "\n", with: " && ")],
                                 environment: ProcessInfo.processInfo.environment.merging([
                                     "CI_PROJECT_DIR": repo.url.path, "CI_MERGE_REQUEST_DIFF_BASE_SHA": base, "CI_COMMIT_SHA": head,
                                     "PATH": "\(binaries):\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")"]) { $1 },
                                 timeout: 120, allowFailure: true)
        #expect(run.status == 0, "\(run.stderr)")
        let diff = try String(contentsOf: work.appendingPathComponent("relay.diff"), encoding: .utf8)
        let git = try runProcess("/usr/bin/env", ["git", "-C", repo.url.path, "-c", "core.quotepath=off", "diff", "--no-color", "--no-renames",
                                                  "--no-ext-diff", "-U3", base, head, "--", "apps"], allowFailure: true).stdout
        #expect(!diff.isEmpty && diff == git, "\(diff)")
        #expect(!diff.contains("logo.png"), "Flux's ignore rules leave images out of artifacts")

        let wait = try #require((rolloutJob["script"] as? [String])?.first { $0.contains("relay-server wait") })
        let help = try runProcess(Binaries.relayServer, ["wait", "--help"]).stdout
        for flag in wait.split(separator: " ").filter({ $0.hasPrefix("--") }) {
            #expect(help.contains(String(flag)), "relay-server wait has no \(flag)")
        }
    }

    @Test func theProjectsGitLabFreezePeriodsHoldRevisionsToo() throws {
        let fleet = try Fleet("rollout-gitlab-freeze", agents: ["edge"], clusters: false, sourceYAML: ", freezePeriods: true, freezePeriodsInterval: 1s")
        defer { fleet.shutdown() }
        let h = fleet.harness
        let periods = "/api/v4/projects/group%2Fpodinfo/freeze_periods"
        let created = try HTTPProbe.request(fleet.notify.base + periods, method: "POST",
                                            headers: ["PRIVATE-TOKEN: \(fleet.notify.gitlabToken)", "Content-Type: application/json"],
                                            body: try JSONSerialization.data(withJSONObject: [
                                                "freeze_start": "0 23 * * FRI", "freeze_end": "0 7 * * MON", "cron_timezone": "Europe/Berlin"]))
        #expect(created.status == 201, "\(created.text)")
        let id = try #require((try JSONSerialization.jsonObject(with: created.body) as? [String: Any])?["id"] as? Int)
        try fleet.setClock(Self.utc("2026-12-09T12:00:00Z"))
        try h.waitUntil("revision 1", timeout: 30) { try fleet.current("edge") == fleet.revision(0) }
        try fleet.setClock(Self.utc("2026-12-12T12:00:00Z"))  // Saturday: inside the project's freeze
        Thread.sleep(forTimeInterval: 2)
        try fleet.newCommit("apps/deploy.yaml", "kind: Deployment\n# two\n")
        try h.waitUntil("held by GitLab's freeze period", timeout: 30) {
            ((try fleet.agentView("edge")["hold"] as? [String: Any])?["reason"] as? String)?.contains("GitLab freeze period \(id)") == true
        }
        let hold = try #require(try fleet.agentView("edge")["hold"] as? [String: Any])
        #expect((hold["until"] as? String)?.hasPrefix("2026-12-14T06:00:00") == true, "07:00 in Berlin: \(hold)")
        #expect(try fleet.current("edge") == fleet.revision(0))
        // The period is deleted in GitLab: the next read lifts the hold.
        let deleted = try HTTPProbe.request(fleet.notify.base + periods + "/\(id)", method: "DELETE",
                                            headers: ["PRIVATE-TOKEN: \(fleet.notify.gitlabToken)"])
        #expect(deleted.status == 204)
        try h.waitUntil("revision 2 after the period is gone", timeout: 30) { try fleet.current("edge") == fleet.revision(1) }
    }

    /// Two replicas on one PostgreSQL: one governs (a lease), both serve its decisions; when it
    /// stops, the other takes over and the held revision arrives when the freeze ends.
    @Test func replicasHoldTheSameWayAndTheSurvivorTakesOverGoverning() throws {
        let cluster = try ReplicaCluster("rollout-replicas", replicas: 2, agents: 2) { _ in
            "freezes:\n  - {name: weekend, start: \"0 23 * * FRI\", end: \"0 7 * * MON\", agents: [edge-01]}\n"
        }
        defer { cluster.shutdown() }
        let clock = cluster.base.appending("clock-offset")
        func setClock(_ text: String) throws {
            try Data(String(Self.utc(text).timeIntervalSinceNow).utf8).write(to: clock, options: .atomic)
        }
        try setClock("2026-12-09T12:00:00Z")
        for replica in cluster.replicas { try replica.startRelay(environment: ["RELAY_TEST_CLOCK_OFFSET_FILE": clock.path]) }
        try cluster.startAgents()
        let h = cluster.replicas[0]
        func current(_ agent: String) throws -> String { try h.published(agent).first { $0.source == "podinfo" }?.revision ?? "" }
        let first = try cluster.repos[0].head()
        try h.waitUntil("both agents get revision 1", timeout: 60) {
            try current("edge-00").hasSuffix(first) && current("edge-01").hasSuffix(first)
        }
        try setClock("2026-12-12T12:00:00Z")
        Thread.sleep(forTimeInterval: 2)
        try cluster.repos[0].write("podinfo.yaml", "name: podinfo\nreplicas: 2\n")
        let second = try cluster.repos[0].commit("second")
        _ = try cluster.replicas[1].pushWebhook(source: cluster.replicas[1].sources[0])
        try h.waitUntil("edge-00 gets revision 2", timeout: 60) { try current("edge-00").hasSuffix(second) }
        Thread.sleep(forTimeInterval: 3)
        #expect(try current("edge-01").hasSuffix(first), "held on whichever replica it is connected to")
        let governor = try cluster.sql("SELECT replica FROM rollout_governor")
        #expect(governor == "r0" || governor == "r1")
        // The governing replica stops: the other takes the lease; the freeze ends; revision 2 arrives.
        let index = governor == "r0" ? 0 : 1
        cluster.replicas[index].stopRelay()
        try setClock("2026-12-14T07:00:30Z")
        try h.waitUntil("edge-01 gets revision 2 from the survivor", timeout: 60) { try current("edge-01").hasSuffix(second) }
        #expect(try cluster.sql("SELECT replica FROM rollout_governor") == "r\(1 - index)")
    }
}
