import Foundation
import Provenance
import Testing
import Wire

/// The whole offline loop with no network path between relay and agent (the agent has no
/// `relay`): export → import → skopeo pulls from the agent → Flux status at the agent →
/// export-status → relay import → the API shows the revision applied → the next export carries
/// the acknowledgement → the agent trims its journal → a `--since` export holds only the new
/// revision. Real processes throughout; the Kubernetes API is the stand-in (kube-apiserver
/// cannot run here; it follows the upstream contract for the calls the agent makes).
@Suite struct AirGapLoopTests {
    @Test func aFullOfflineLoopCarriesArtifactsInAndStatusOutWithAcknowledgementsAndDeltas() throws {
        let dir = try TemporaryDirectory(prefix: "airgap-loop")
        defer { dir.remove() }
        let skopeo = try #require(findExecutable("skopeo"), "skopeo is installed by scripts/setup.sh")
        let api = try KubeStandIn(dir: dir)
        defer { api.stop() }
        let kubeconfig = dir.appending("kubeconfig")
        try api.writeKubeconfig(to: kubeconfig)

        let podinfo = try TestRepo.create(at: dir.appending("podinfo"))
        try podinfo.write("apps/deploy.yaml", "kind: Deployment\n")
        let first = try podinfo.commit("initial")
        let infra = try TestRepo.create(at: dir.appending("infra"))
        try infra.write("infra/ns.yaml", "kind: Namespace\n")
        _ = try infra.commit("initial")
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: podinfo, branch: "main"), .init(name: "infra", repo: infra, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo", "infra"])], dir: dir)
        defer { harness.shutdown() }
        try harness.startRelay()
        let relayConfig = dir.appending("relay.yaml").path
        func relay(_ arguments: [String]) throws -> [String: Any] {
            let output = try runProcess(Binaries.relayServer, arguments + ["--config", relayConfig])
            return (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]) ?? ["stdout": output.stdout]
        }
        func revisions(_ source: String) throws -> [[String: Any]] {
            let answer = try HTTPProbe.request("http://127.0.0.1:\(harness.httpPort)/api/v1/sources/\(source)/revisions",
                                               headers: ["Authorization: Bearer \(harness.readerToken)"])
            return (try? JSONSerialization.jsonObject(with: answer.body) as? [[String: Any]]) ?? []
        }
        try harness.waitUntil("both sources packaged") { try !revisions("podinfo").isEmpty && !revisions("infra").isEmpty }
        let firstRevision = "main@sha1:\(first)"
        #expect(try revisions("podinfo").first?["revision"] as? String == firstRevision)

        // Keys, once, each way.
        let relayPub = dir.appending("relay.pub")
        try Data((try relay(["keys", "public"])["stdout"] as? String ?? "").utf8).write(to: relayPub)

        // The offline agent: a name, trust in the relay's key, Flux endpoint, events and the
        // status watch on the Kubernetes API. No relay, no token, no CA.
        let port = try LoopbackPort.free()
        try Data("event-key\n".utf8).write(to: dir.appending("events.key"))
        try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://127.0.0.1:\(port)/podinfo"))
        try api.seed(KubeStandIn.kustomization("podinfo", source: "podinfo", status: KubeStandIn.progressingStatus()))
        let agentConfig = dir.appending("offline-edge.yaml").path
        try Data("""
            name: edge
            dataDir: \(dir.appending("agent-edge").path)
            trust: {relayPublicKeys: [\(relayPub.path)]}
            listen: 127.0.0.1:\(port)
            flux:
              url: http://127.0.0.1:\(port)
              status: {watch: true}
              events: {hmacTokenFile: \(dir.appending("events.key").path)}
              kubernetes: {kubeconfig: \(kubeconfig.path)}

            """.utf8).write(to: URL(fileURLWithPath: agentConfig))
        func agent(_ arguments: [String]) throws -> [String: Any] {
            let output = try runProcess(Binaries.relayAgent, arguments + ["--config", agentConfig])
            return (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any]) ?? ["stdout": output.stdout]
        }
        let running = try BackgroundProcess(name: "relay-agent-edge", executable: Binaries.relayAgent, arguments: ["run", "--config", agentConfig],
                                            logFile: dir.appending("agent-edge.log"))
        defer { running.stop() }
        try harness.waitUntil("offline agent endpoint") { try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200 }
        let agentPub = dir.appending("edge.pub")
        try Data((try agent(["keys", "public"])["stdout"] as? String ?? "").utf8).write(to: agentPub)
        _ = try relay(["agents", "trust", "edge", agentPub.path])

        // 1. Export → import (through the running agent's inbox) → skopeo pulls from the agent.
        let bundle1 = dir.appending("edge-1.tar").path
        let export1 = try relay(["bundle", "export", "--agent", "edge", "--output", bundle1])
        #expect(export1["sequence"] as? Int == 1)
        #expect(Set(export1["included"] as? [String] ?? []).count == 2)
        let import1 = try agent(["import", bundle1])
        #expect(import1["sequence"] as? Int == 1, "\(import1)")
        let pulled = dir.appending("pulled")
        _ = try runProcess(skopeo, ["copy", "--src-tls-verify=false", "docker://127.0.0.1:\(port)/podinfo:main", "dir:\(pulled.path)"], timeout: 120)
        let podinfoDigest = try #require(try revisions("podinfo").first?["digest"] as? String)
        #expect(FileManager.default.fileExists(atPath: pulled.appendingPathComponent(String(podinfoDigest.dropFirst(7))).path),
                "skopeo pulled the artifact's exact layer from the offline agent")

        // 2. Flux at the agent: a notification-controller event, and the Kustomization applies it.
        #expect(try StatusUplinkTests.postEvent(port: port, key: "event-key", message: "applied offline") == 202)
        try api.setStatus(group: "kustomize.toolkit.fluxcd.io", version: "v1", plural: "kustomizations", namespace: "flux-system",
                          name: "podinfo", status: KubeStandIn.readyStatus(revision: firstRevision))

        // 3. export-status (through the running agent) → relay import → the API shows it applied.
        var statusBundle = ""
        var statusSummary: [String: Any] = [:]
        try harness.waitUntil("the ready Kustomization in the agent's journal", timeout: 30) {
            statusBundle = dir.appending("status-\(UUID().uuidString.prefix(6)).json").path
            statusSummary = try agent(["export-status", "--output", statusBundle])
            return try Self.statusEntries(statusBundle).contains { $0.object.state == "ready" && $0.object.revisionApplied == firstRevision }
        }
        let imported = try relay(["bundle", "import", statusBundle])
        let upTo = try #require(imported["up_to"] as? Int)
        #expect(imported["stored"] as? Int == statusSummary["entries"] as? Int)
        let applied = try #require(try revisions("podinfo").first { $0["revision"] as? String == firstRevision })
        let edge = try #require((applied["agents"] as? [[String: Any]])?.first { $0["agent"] as? String == "edge" })
        #expect(edge["applied"] as? Bool == true, "\(applied)")
        #expect(edge["healthy"] as? Bool == true)

        // 4. A new podinfo revision; infra unchanged. The next export, since that status bundle,
        //    carries the acknowledgement and only the new revision.
        try podinfo.write("apps/service.yaml", "kind: Service\n")
        let second = try podinfo.commit("service")
        #expect(try harness.pushWebhook(source: harness.sources[0]).stdout.hasSuffix("202"))
        try harness.waitUntil("the new revision packaged") { try revisions("podinfo").first?["revision"] as? String == "main@sha1:\(second)" }
        let bundle2 = dir.appending("edge-2.tar").path
        let export2 = try relay(["bundle", "export", "--agent", "edge", "--output", bundle2, "--since", statusBundle])
        #expect(export2["sequence"] as? Int == 2)
        #expect(export2["included"] as? [String] == ["podinfo@main@sha1:\(second)"], "\(export2)")
        #expect((export2["omitted"] as? [String] ?? []).contains { $0.hasPrefix("infra@") })
        let ack = try #require(export2["statusAck"] as? [String: Any])
        #expect(ack["upTo"] as? Int == upTo)

        // 5. Importing it trims the journal: nothing up to the acknowledgement is exported again.
        let import2 = try agent(["import", bundle2])
        #expect(import2["sequence"] as? Int == 2, "\(import2)")
        #expect(import2["acknowledged"] as? Int == upTo)
        let after = dir.appending("status-after.json").path
        _ = try agent(["export-status", "--output", after])
        let remaining = try Self.statusEntries(after)
        #expect(remaining.allSatisfy { $0.sequence > UInt64(upTo) }, "journal trimmed up to \(upTo): \(remaining.map(\.sequence))")
        #expect(!remaining.contains { $0.event.message == "applied offline" })
        let served = try runProcess(skopeo, ["inspect", "--raw", "--tls-verify=false", "docker://127.0.0.1:\(port)/podinfo:main"])
        #expect(served.stdout.contains(try #require(try revisions("podinfo").first?["digest"] as? String)))
        #expect(try HTTPProbe.request("http://127.0.0.1:\(port)/readyz").status == 200)
    }

    /// The journal entries a status bundle carries (read as the relay does, after its signature).
    static func statusEntries(_ path: String) throws -> [Relay_V1_StatusEntry] {
        let envelope = try StatusBundleFile.read(path: path)
        let statement = try JSONDecoder().decode(StatusStatement.self, from: envelope.statement)
        return try Relay_V1_StatusBatch(serializedBytes: statement.statusBatch).entries
    }
}
