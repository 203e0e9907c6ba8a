import Foundation
import Testing

/// Flux status from a cluster to the relay's API, live stream and page: a real relay and
/// agent; the Kubernetes API is the kube-apiserver STAND-IN (it cannot run here), written to
/// the way kustomize-controller writes Kustomization status.
@Suite struct StatusFeedTests {
    static func fixture(_ path: String) -> String {
        InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/\(path)").path
    }

    final class Setup: @unchecked Sendable {
        let dir: TemporaryDirectory
        let api: KubeStandIn
        let repo: TestRepo
        let harness: RelayHarness
        let commit: String
        var base: String { "http://127.0.0.1:\(harness.httpPort)" }
        var token: String { harness.readerToken }

        init(_ prefix: String, configure: (TemporaryDirectory, RelayHarness) throws -> Void = { _, _ in }) throws {
            dir = try TemporaryDirectory(prefix: prefix)
            api = try KubeStandIn(dir: dir)
            let kubeconfig = dir.appending("kubeconfig")
            try api.writeKubeconfig(to: kubeconfig)
            repo = try TestRepo.create(at: dir.appending("podinfo"))
            try repo.write("apps/deploy.yaml", "kind: Deployment\n")
            commit = try repo.commit("initial")
            harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"])], dir: dir)
            let port = try LoopbackPort.free()
            try configure(dir, harness)
            try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://127.0.0.1:\(port)/podinfo"))
            try api.seed(KubeStandIn.kustomization("podinfo", source: "podinfo",
                                                   status: KubeStandIn.progressingStatus(attempting: "main@sha1:\(commit)")))
            try harness.serveFlux("edge", port: port, yaml: """
                flux:
                  url: http://127.0.0.1:\(port)
                  reconcile: {ociRepositories: true}
                  status: {watch: true}
                  kubernetes: {kubeconfig: \(kubeconfig.path)}

                """)
            try harness.startRelay()
            try harness.startAgent("edge")
        }

        func get(_ path: String, token: String? = nil) throws -> HTTPProbe {
            try HTTPProbe.request(base + path, headers: token.map { ["Authorization: Bearer \($0)"] } ?? [])
        }

        func json(_ path: String) throws -> Any? {
            try JSONSerialization.jsonObject(with: get(path, token: token).body)
        }

        /// The Kustomization's state at the relay, once its source is resolved.
        func kustomizationState() throws -> String? {
            let objects = try json("/api/v1/agents/edge/objects") as? [[String: Any]]
            let object = objects?.first { $0["kind"] as? String == "Kustomization" && $0["name"] as? String == "podinfo" }
            return object?["source"] as? String == "podinfo" ? object?["state"] as? String : nil
        }

        func shutdown() {
            harness.shutdown()
            api.stop()
            dir.remove()
        }
    }

    @Test func apiReportsAgentsObjectsRevisionsAndTimelineAndRejectsBadTokens() throws {
        let setup = try Setup("status-api")
        defer { setup.shutdown() }
        // The watcher reports the Kustomization (progressing) and the OCIRepository.
        try setup.harness.waitUntil("Kustomization at the relay") { try setup.kustomizationState() == "progressing" }

        // Tokens: every endpoint but /healthz needs a reader token.
        for path in ["/api/v1/agents", "/api/v1/agents/edge/objects", "/api/v1/sources/podinfo/revisions", "/api/v1/overview",
                     "/api/v1/timeline", "/api/v1/stream", "/"] {
            #expect(try setup.get(path).status == 401, "\(path) without a token")
            #expect(try setup.get(path, token: "wrong").status == 401, "\(path) with a wrong token")
            #expect(try setup.get(path, token: "t-edge").status == 401, "\(path) with an agent token")
        }
        #expect(try setup.get("/healthz").status == 200)
        #expect(try setup.get("/api/v1/agents/nobody/objects", token: setup.token).status == 404)

        let agents = try #require(try setup.json("/api/v1/agents") as? [[String: Any]])
        #expect(agents.count == 1)
        #expect(agents[0]["name"] as? String == "edge")
        #expect(agents[0]["connected"] as? Bool == true)
        #expect((agents[0]["version"] as? String)?.hasPrefix("relay-agent/") == true)
        #expect(agents[0]["sources"] as? [String] == ["podinfo"])

        let objects = try #require(try setup.json("/api/v1/agents/edge/objects") as? [[String: Any]])
        let kustomization = try #require(objects.first { $0["kind"] as? String == "Kustomization" })
        #expect(kustomization["source"] as? String == "podinfo")  // resolved through its OCIRepository
        #expect(kustomization["reason"] as? String == "Progressing")

        // kustomize-controller applies the revision: applied and healthy on the relay.
        let revision = "main@sha1:\(setup.commit)"
        try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                                name: "podinfo", status: KubeStandIn.readyStatus(revision: revision))
        try setup.harness.waitUntil("ready at the relay") { try setup.kustomizationState() == "ready" }
        let revisions = try #require(try setup.json("/api/v1/sources/podinfo/revisions") as? [[String: Any]])
        let first = try #require(revisions.first { $0["revision"] as? String == revision })
        let perAgent = try #require((first["agents"] as? [[String: Any]])?.first)
        #expect(perAgent["agent"] as? String == "edge")
        #expect(perAgent["delivered"] as? Bool == true)
        #expect(perAgent["applied"] as? Bool == true)
        #expect(perAgent["healthy"] as? Bool == true)

        // The timeline: ordered feed ids, filters, and `since`.
        let page = try #require(try setup.json("/api/v1/timeline?agent=edge&source=podinfo") as? [String: Any])
        let entries = try #require(page["entries"] as? [[String: Any]])
        let ids = entries.compactMap { $0["id"] as? Int }
        #expect(ids == ids.sorted() && !ids.isEmpty)
        #expect(entries.allSatisfy { ($0["object"] as? [String: Any])?["source"] as? String == "podinfo" })
        let states = entries.compactMap { ($0["object"] as? [String: Any]).flatMap { $0["kind"] as? String == "Kustomization" ? $0["state"] as? String : nil } }
        #expect(states.first == "progressing" && states.last == "ready")
        let later = try #require(try setup.json("/api/v1/timeline?since=\(ids[0])") as? [String: Any])
        #expect((later["entries"] as? [[String: Any]])?.compactMap { $0["id"] as? Int }.allSatisfy { $0 > ids[0] } == true)
        #expect(try setup.get("/api/v1/timeline?since=-1", token: setup.token).status == 400)

        // The overview: the cell is ready at the delivered revision.
        let overview = try #require(try setup.json("/api/v1/overview") as? [String: Any])
        let cell = try #require((overview["cells"] as? [[String: Any]])?.first)
        #expect(cell["state"] as? String == "ready")
        #expect(cell["delivered"] as? String == revision)
        #expect(cell["applied"] as? String == revision)

        // Offline agents stay listed with when they were last heard.
        setup.harness.stopAgent("edge")
        try setup.harness.waitUntil("agent offline") {
            (try setup.json("/api/v1/agents") as? [[String: Any]])?.first?["connected"] as? Bool == false
        }
        let offline = try #require((try setup.json("/api/v1/agents") as? [[String: Any]])?.first)
        #expect(offline["lastHeard"] is String)
    }

    @Test func theWatcherRelistsAfter410AndDroppedWatchesAndReportsDeletions() throws {
        let setup = try Setup("status-watch")
        defer { setup.shutdown() }
        try setup.harness.waitUntil("Kustomization at the relay") { try setup.kustomizationState() == "progressing" }
        // The agent's Kustomization requests at the API server: lists, or watches.
        func kustomizationRequests(watch: Bool) throws -> Int {
            try setup.api.requests().filter { request in
                request["method"] as? String == "GET" && (request["path"] as? String ?? "").hasSuffix("/kustomizations")
                    && ((request["query"] as? [String: String])?["watch"] != nil) == watch
            }.count
        }
        // Its watch is open (the list alone does not make the race below).
        try setup.harness.waitUntil("the Kustomization watch open") { try kustomizationRequests(watch: true) >= 1 }
        let lists = try kustomizationRequests(watch: false)
        // The API server compacts and cuts every watch: the agent's next watch from its last
        // resourceVersion gets 410 Gone, lists again, and carries on. The resourceVersion moves
        // on first (expire-continue: one step, no event), so the horizon is past whatever the
        // agent last saw, a bookmark at the current version included.
        try setup.api.control("POST", "expire-continue")
        try setup.api.control("POST", "compact")
        try setup.api.control("POST", "close-watches")
        try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                                name: "podinfo", status: KubeStandIn.readyStatus(revision: "main@sha1:\(setup.commit)"))
        try setup.harness.waitUntil("ready after the relist") { try setup.kustomizationState() == "ready" }
        #expect(try kustomizationRequests(watch: false) > lists, "the agent listed Kustomizations again")
        // A deleted object is reported as such and leaves the relay's object list.
        let path = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/podinfo"
        let deleted = try HTTPProbe.request(setup.api.server + path, method: "DELETE",
                                            headers: ["Authorization: Bearer \(setup.api.token)"], caFile: setup.api.tls.caFile.path)
        #expect(deleted.status == 200)
        try setup.harness.waitUntil("deletion at the relay") { try setup.kustomizationState() == nil }
        let timeline = try #require(try setup.json("/api/v1/timeline?agent=edge") as? [String: Any])
        let states = (timeline["entries"] as? [[String: Any]] ?? []).compactMap { $0["object"] as? [String: Any] }
            .filter { $0["kind"] as? String == "Kustomization" }.compactMap { $0["state"] as? String }
        #expect(states.last == "deleted")
    }

    @Test func theStreamDeliversChangesLiveAndResumesFromLastEventID() throws {
        let setup = try Setup("status-sse")
        defer { setup.shutdown() }
        try setup.harness.waitUntil("Kustomization at the relay") { try setup.kustomizationState() == "progressing" }
        let output = setup.dir.appending("stream.txt")
        let curl = try BackgroundProcess(name: "sse", executable: "/usr/bin/env",
                                         arguments: ["curl", "-sN", "--max-time", "30", "-H", "Authorization: Bearer \(setup.token)",
                                                     "\(setup.base)/api/v1/stream?source=podinfo"], logFile: output)
        defer { curl.stop() }
        try setup.harness.waitUntil("stream backlog") { (try? String(contentsOf: output, encoding: .utf8))?.contains("\"progressing\"") == true }
        try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                                name: "podinfo", status: KubeStandIn.failingStatus(revision: "main@sha1:\(setup.commit)", message: "Deployment/podinfo not ready"))
        try setup.harness.waitUntil("live failing entry") { (try? String(contentsOf: output, encoding: .utf8))?.contains("Deployment/podinfo not ready") == true }
        let text = try String(contentsOf: output, encoding: .utf8)
        let events = text.components(separatedBy: "\n\n").filter { $0.contains("event: status") }
        let ids = events.compactMap { block in block.split(separator: "\n").first { $0.hasPrefix("id: ") }.flatMap { Int($0.dropFirst(4)) } }
        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
        // Resume: Last-Event-ID gives exactly what came after it.
        let resumed = try HTTPProbe.request("\(setup.base)/api/v1/stream?source=podinfo",
                                            headers: ["Authorization: Bearer \(setup.token)", "Last-Event-ID: \(ids[0])"],
                                            maxTime: 2)
        let resumedIDs = resumed.text.split(separator: "\n").filter { $0.hasPrefix("id: ") }.compactMap { Int($0.dropFirst(4)) }
        #expect(resumedIDs == Array(ids.dropFirst()))
    }
}

/// The status page in a real browser (headless Chromium driven over the DevTools protocol).
@Suite struct StatusPageTests {
    @Test func thePageRendersTheMatrixAndAStatusChangeAppearsWithoutAReload() throws {
        let setup = try StatusFeedTests.Setup("status-page")
        defer { setup.shutdown() }
        try setup.harness.waitUntil("Kustomization at the relay") { try setup.kustomizationState() == "progressing" }
        let python = try InteropTests.python()
        let chromium = try #require(findExecutable("chromium"), "chromium is installed by scripts/setup.sh")
        let artifacts = InteropTests.repoRoot.appendingPathComponent(".test-artifacts")
        try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
        let screenshot = artifacts.appendingPathComponent("status-page.png")
        let ready = setup.dir.appending("page-ready")
        let log = setup.dir.appending("page-check.log")
        let check = try BackgroundProcess(name: "page-check", executable: python, arguments: [
            StatusFeedTests.fixture("page/page_check.py"), "--url", "\(setup.base)/?access_token=\(setup.token)",
            "--selector", "#cell-edge-podinfo", "--attribute", "data-state", "--initial", "progressing", "--final", "ready",
            "--ready-file", ready.path, "--screenshot", screenshot.path, "--timeout", "30", "--chromium", chromium,
        ], logFile: log)
        defer { check.stop() }
        try setup.harness.waitUntil("page loaded with the matrix", timeout: 40) { FileManager.default.fileExists(atPath: ready.path) }
        // The change happens on the agent's side: kustomize-controller reports the revision applied.
        try setup.api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                                name: "podinfo", status: KubeStandIn.readyStatus(revision: "main@sha1:\(setup.commit)"))
        try setup.harness.waitUntil("page check finished", timeout: 40) {
            (try? String(contentsOf: log, encoding: .utf8))?.contains("{\"ok\"") == true
        }
        let line = try #require(try String(contentsOf: log, encoding: .utf8).split(separator: "\n").last { $0.hasPrefix("{\"ok\"") })
        let result = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(result["ok"] as? Bool == true, "\(result)")
        #expect(result["reloaded"] as? Bool == false)
        #expect(result["final"] as? String == "ready")
        #expect((result["text"] as? String)?.contains("applied main@\(setup.commit.prefix(7))") == true, "\(result["text"] ?? "")")
        #expect((result["consoleErrors"] as? [Any])?.isEmpty == true, "\(result["consoleErrors"] ?? "")")
        let png = try Data(contentsOf: screenshot)
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 5000)
    }
}
