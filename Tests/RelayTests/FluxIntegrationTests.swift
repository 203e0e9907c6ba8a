import Foundation
import Testing

/// relay → agent → Flux objects, end to end with real processes: the agent keeps an
/// ExternalArtifact per source and wakes OCIRepositories and a Receiver on every arrival.
/// The Kubernetes API and the Receiver are STAND-INS (kube-apiserver and
/// notification-controller cannot run here); both follow the upstream contracts.
@Suite struct FluxIntegrationTests {
    @Test func arrivalUpdatesTheExternalArtifactAndWakesOCIRepositoriesAndReceivers() throws {
        let dir = try TemporaryDirectory(prefix: "flux-e2e")
        defer { dir.remove() }
        let api = try KubeStandIn(dir: dir)
        defer { api.stop() }
        let kubeconfig = dir.appending("kubeconfig")
        try api.writeKubeconfig(to: kubeconfig)

        // The Receiver stand-in (generic-hmac).
        try Data("hook-key\n".utf8).write(to: dir.appending("receiver-token"))
        let receiverLog = dir.appending("receiver.jsonl")
        let receiverOut = dir.appending("receiver.out")
        let receiver = try BackgroundProcess(
            name: "receiver", executable: findExecutable("python3") ?? "/usr/bin/python3",
            arguments: [InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/kube-standin/receiver_standin.py").path,
                        "hook-key", receiverLog.path], logFile: receiverOut)
        defer { receiver.stop() }
        var receiverPort = 0
        let deadline = Date().addingTimeInterval(20)
        while receiverPort == 0, Date() < deadline {
            let text = (try? String(contentsOf: receiverOut, encoding: .utf8)) ?? ""
            receiverPort = text.split(separator: "\n").first { $0.hasPrefix("listening ") }.flatMap { Int($0.dropFirst(10)) } ?? 0
            if receiverPort == 0 { Thread.sleep(forTimeInterval: 0.05) }
        }
        try #require(receiverPort > 0)

        let repo = try TestRepo.create(at: dir.appending("podinfo"))
        try repo.write("apps/podinfo/deployment.yaml", "kind: Deployment\n")
        let first = try repo.commit("initial")
        let harness = try RelayHarness(sources: [.init(name: "podinfo", repo: repo, branch: "main")],
                                       agents: [.init(name: "edge", token: "t-edge", sources: ["podinfo"])], dir: dir)
        defer { harness.shutdown() }
        let port = try LoopbackPort.free()
        try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://127.0.0.1:\(port)/podinfo"))
        try api.seed(KubeStandIn.ociRepository("elsewhere", url: "oci://ghcr.io/team/podinfo"))
        try harness.serveFlux("edge", port: port, yaml: """
            flux:
              url: http://127.0.0.1:\(port)
              externalArtifacts: {enabled: true, namespace: flux-system}
              reconcile:
                ociRepositories: true
                receivers: [{url: "http://127.0.0.1:\(receiverPort)/hook/abc123", hmacTokenFile: \(dir.appending("receiver-token").path)}]
              kubernetes: {kubeconfig: \(kubeconfig.path)}

            """)
        try harness.startRelay()
        try harness.startAgent("edge")

        func eaArtifact() throws -> [String: Any]? {
            ((try api.object("ExternalArtifact", "flux-system", "podinfo"))?["status"] as? [String: Any])?["artifact"] as? [String: Any]
        }
        func requestedAt() throws -> String? {
            (((try api.object("OCIRepository", "flux-system", "podinfo"))?["metadata"] as? [String: Any])?["annotations"] as? [String: String])?["reconcile.fluxcd.io/requestedAt"]
        }
        try harness.waitUntil("ExternalArtifact status") { try eaArtifact()?["revision"] as? String == "main@sha1:\(first)" }
        let published = try #require(try harness.published("edge").first)
        let artifact = try #require(try eaArtifact())
        #expect(artifact["digest"] as? String == published.digest)
        // The URL Flux will fetch serves exactly the digest's bytes.
        let url = try #require(artifact["url"] as? String)
        let fetched = try HTTPProbe.request(url)
        #expect(fetched.status == 200)
        #expect(fetched.sha256 == published.digest)
        try harness.waitUntil("OCIRepository nudged") { try requestedAt() != nil }
        let firstRequest = try requestedAt()
        let elsewhere = try api.object("OCIRepository", "flux-system", "elsewhere")
        #expect((elsewhere?["metadata"] as? [String: Any])?["annotations"] == nil)
        try harness.waitUntil("receiver called") { (try? String(contentsOf: receiverLog, encoding: .utf8))?.contains(first) == true }

        // A push: within seconds the ExternalArtifact has the new revision (which wakes its
        // consumers), the OCIRepository a new requestedAt, and the Receiver another valid call.
        try repo.write("apps/podinfo/service.yaml", "kind: Service\n")
        let second = try repo.commit("second")
        try harness.pushWebhook(source: harness.sources[0])
        let seconds = try harness.waitUntil("new revision in Flux objects", timeout: 10) {
            try eaArtifact()?["revision"] as? String == "main@sha1:\(second)" && requestedAt() != firstRequest
                && (try? String(contentsOf: receiverLog, encoding: .utf8))?.contains(second) == true
        }
        #expect(seconds < 5)
        let calls = try String(contentsOf: receiverLog, encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(calls.count >= 2)
        #expect(calls.allSatisfy { $0["valid"] as? Bool == true && $0["path"] as? String == "/hook/abc123" })
    }
}
