import ArtifactMirror
import Foundation
import Logging
@testable import RelayAgent
import Testing

/// relay-agent's Kubernetes API client against a kube-apiserver STAND-IN
/// (Fixtures/kube-standin): kube-apiserver cannot run on this machine, so a local HTTPS server
/// that follows the upstream contract (paths, verbs, apply-patch and merge-patch content
/// types, the status subresource, Status answers for 401/404/409/410/415/429) plays its part.
/// Request bodies are shaped like the real Flux objects (source.toolkit.fluxcd.io/v1).
@Suite struct KubernetesClientTests {
    static let logger = Logger(label: "kube-test")

    static func record(_ revision: String, digest: String, size: UInt64 = 1234) -> ArtifactRecord {
        ArtifactRecord(source: "podinfo", revision: revision, commit: String(revision.suffix(40)), digest: digest, size: size,
                       files: 3, skipped: [], ignoreKey: "relay", createdAt: Date(), lastUsedAt: Date(),
                       origin: "https://gitlab.example/team/podinfo.git", packagedAt: Date(timeIntervalSince1970: 1_700_000_000))
    }

    static let digestA = "sha256:" + String(repeating: "a", count: 64)
    static let digestB = "sha256:" + String(repeating: "b", count: 64)
    static let commitA = String(repeating: "1", count: 40)
    static let commitB = String(repeating: "2", count: 40)

    func standIn(_ dir: TemporaryDirectory, crdMissing: [String] = []) async throws -> KubeStandIn {
        try await offPool { try KubeStandIn(dir: dir, crdMissing: crdMissing) }
    }

    @Test func externalArtifactIsAppliedThenItsStatusGoesThroughTheStatusSubresource() async throws {
        let dir = try TemporaryDirectory(prefix: "kube-ea")
        defer { dir.remove() }
        let api = try await standIn(dir)
        defer { api.stop() }
        let kubeconfig = dir.appending("kubeconfig")
        try api.writeKubeconfig(to: kubeconfig)
        let connection = try KubeConnection.kubeconfig(path: kubeconfig.path)
        #expect(connection.namespace == "relay-system")
        let client = try KubeClient(connection: connection, logger: Self.logger)
        let writer = ExternalArtifactWriter(client: client, namespace: "flux-system",
                                            baseURL: "http://relay-agent.relay-system.svc.cluster.local.:9090", names: [:])
        try await writer.publish(Self.record("main@sha1:\(Self.commitA)", digest: Self.digestA))

        let requests = try await offPool { try api.requests() }
        #expect(requests.count == 2)
        // 1. Server-side apply of the object: field manager, force, apply-patch content type.
        let apply = requests[0]
        #expect(apply["method"] as? String == "PATCH")
        #expect(apply["path"] as? String == "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/externalartifacts/podinfo")
        #expect(apply["query"] as? [String: String] == ["fieldManager": "relay-agent", "force": "true"])
        #expect(apply["contentType"] as? String == "application/apply-patch+yaml")
        #expect(apply["authorization"] as? String == "Bearer sa-token")
        let applied = try #require(apply["body"] as? [String: Any])
        #expect(applied["apiVersion"] as? String == "source.toolkit.fluxcd.io/v1")
        #expect(applied["kind"] as? String == "ExternalArtifact")
        #expect(applied["status"] == nil)
        #expect(((applied["metadata"] as? [String: Any])?["labels"] as? [String: String])?["app.kubernetes.io/managed-by"] == "relay-agent")
        #expect(apply["status"] as? Int == 201)
        // 2. The status through /status (spec §5.1), shaped as meta.Artifact + conditions.
        let status = requests[1]
        #expect(status["path"] as? String == "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/externalartifacts/podinfo/status")
        #expect(status["contentType"] as? String == "application/apply-patch+yaml")
        #expect(status["status"] as? Int == 200)
        let sent = try #require((status["body"] as? [String: Any])?["status"] as? [String: Any])
        let artifact = try #require(sent["artifact"] as? [String: Any])
        #expect(artifact["digest"] as? String == Self.digestA)
        #expect(artifact["revision"] as? String == "main@sha1:\(Self.commitA)")
        #expect(artifact["url"] as? String == "http://relay-agent.relay-system.svc.cluster.local.:9090/artifacts/sha256/\(String(repeating: "a", count: 64)).tar.gz")
        #expect(artifact["path"] as? String == "externalartifact/flux-system/podinfo/\(String(repeating: "a", count: 64)).tar.gz")
        #expect(artifact["size"] as? Int == 1234)
        #expect((artifact["metadata"] as? [String: String])?["org.opencontainers.image.revision"] == "main@sha1:\(Self.commitA)")
        let conditions = try #require(sent["conditions"] as? [[String: Any]])
        #expect(conditions.count == 1)
        #expect(conditions[0]["type"] as? String == "Ready")
        #expect(conditions[0]["status"] as? String == "True")
        #expect(conditions[0]["reason"] as? String == "Succeeded")
        #expect(conditions[0]["observedGeneration"] as? Int == 1)
        let firstTransition = try #require(conditions[0]["lastTransitionTime"] as? String)

        // What the API server holds: the object with its status.
        let stored = try #require(try await offPool { try api.object("ExternalArtifact", "flux-system", "podinfo") })
        let storedStatus = try #require(stored["status"] as? [String: Any])
        #expect((storedStatus["artifact"] as? [String: Any])?["digest"] as? String == Self.digestA)

        // A new revision: the status moves, Ready keeps its transition time.
        try await Task.sleep(for: .milliseconds(1100))
        try await writer.publish(Self.record("main@sha1:\(Self.commitB)", digest: Self.digestB))
        let updated = try #require(try await offPool { try api.object("ExternalArtifact", "flux-system", "podinfo") })
        let updatedStatus = try #require(updated["status"] as? [String: Any])
        #expect((updatedStatus["artifact"] as? [String: Any])?["revision"] as? String == "main@sha1:\(Self.commitB)")
        #expect(((updatedStatus["conditions"] as? [[String: Any]])?.first)?["lastTransitionTime"] as? String == firstTransition)
        await client.shutdown()
    }

    @Test func inClusterConfigAndTheReconcileAnnotationReachOnlyOCIRepositoriesPointingHere() async throws {
        let dir = try TemporaryDirectory(prefix: "kube-oci")
        defer { dir.remove() }
        let api = try await standIn(dir)
        defer { api.stop() }
        // The service-account mount as the kubelet lays it out.
        let sa = try dir.subdirectory("serviceaccount")
        try Data("sa-token\n".utf8).write(to: sa.appendingPathComponent("token"))
        try FileManager.default.copyItem(at: api.tls.caFile, to: sa.appendingPathComponent("ca.crt"))
        try Data("relay-system".utf8).write(to: sa.appendingPathComponent("namespace"))
        let connection = try KubeConnection.inCluster(serviceAccountDirectory: sa.path, environment: [
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": String(api.port)])
        #expect(connection.namespace == "relay-system")
        let client = try KubeClient(connection: connection, logger: Self.logger)

        let here = "relay-agent.relay-system.svc.cluster.local.:9090"
        try await offPool {
            try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://\(here)/podinfo"))
            try api.seed(KubeStandIn.ociRepository("podinfo-b", namespace: "apps", url: "oci://\(here.uppercased())/podinfo"))
            try api.seed(KubeStandIn.ociRepository("other-source", url: "oci://\(here)/other"))
            try api.seed(KubeStandIn.ociRepository("other-registry", url: "oci://ghcr.io/stefanprodan/podinfo"))
            try api.seed(KubeStandIn.ociRepository("prefix-trap", url: "oci://\(here)/podinfo-extra"))
            try api.control("DELETE", "requests")
            // The first page request is answered 410 Gone (an expired continue token): the list starts again.
            try api.fault(method: "GET", pathContains: "/ocirepositories", status: 410, count: 1)
        }
        let nudger = OCIRepositoryNudger(client: client, hosts: [here], namespaces: nil, repositoryPrefix: nil)
        let token = FluxNotifier.requestToken(Date())
        let nudged = try await nudger.nudge(source: "podinfo", token: token)
        #expect(Set(nudged) == ["flux-system/podinfo", "apps/podinfo-b"])

        let requests = try await offPool { try api.requests() }
        let lists = requests.filter { $0["method"] as? String == "GET" }
        #expect(lists.first?["status"] as? Int == 410)
        #expect(lists.allSatisfy { $0["path"] as? String == "/apis/source.toolkit.fluxcd.io/v1/ocirepositories" })
        #expect(lists.dropFirst().allSatisfy { $0["status"] as? Int == 200 })
        let patches = requests.filter { $0["method"] as? String == "PATCH" }
        #expect(patches.count == 2)
        for patch in patches {
            #expect(patch["contentType"] as? String == "application/merge-patch+json")
            #expect(patch["authorization"] as? String == "Bearer sa-token")
            let body = try #require(patch["body"] as? [String: Any])
            #expect(body as NSDictionary == ["metadata": ["annotations": ["reconcile.fluxcd.io/requestedAt": token]]] as NSDictionary)
        }
        let patched = try #require(try await offPool { try api.object("OCIRepository", "flux-system", "podinfo") })
        #expect(((patched["metadata"] as? [String: Any])?["annotations"] as? [String: String])?["reconcile.fluxcd.io/requestedAt"] == token)
        let untouched = try #require(try await offPool { try api.object("OCIRepository", "flux-system", "other-source") })
        #expect((untouched["metadata"] as? [String: Any])?["annotations"] == nil)
        await client.shutdown()
    }

    @Test func conflictsAndThrottlingAreRetriedAndFinalErrorsSayWhatToDo() async throws {
        let dir = try TemporaryDirectory(prefix: "kube-err")
        defer { dir.remove() }
        let api = try await standIn(dir, crdMissing: ["externalartifacts"])
        defer { api.stop() }
        let kubeconfig = dir.appending("kubeconfig")
        try api.writeKubeconfig(to: kubeconfig)
        let client = try KubeClient(connection: try KubeConnection.kubeconfig(path: kubeconfig.path), logger: Self.logger)
        try await offPool {
            try api.seed(KubeStandIn.ociRepository("podinfo", url: "oci://agent:9090/podinfo"))
            // Two 409 Conflicts, then a 429 with Retry-After: the patch still lands.
            try api.fault(method: "PATCH", pathContains: "/ocirepositories/podinfo", status: 409, count: 2)
            try api.fault(method: "PATCH", pathContains: "/ocirepositories/podinfo", status: 429, count: 1)
        }
        let patch = OCIRepositoryNudger.AnnotationPatch(metadata: .init(annotations: ["reconcile.fluxcd.io/requestedAt": "t1"]))
        _ = try await client.mergePatch(patch, resource: .ociRepository, namespace: "flux-system", name: "podinfo")
        let statuses = try await offPool { try api.requests() }.compactMap { $0["status"] as? Int }
        #expect(statuses == [409, 409, 429, 200])

        // A conflict that never clears: the error after the bounded retries names it.
        try await offPool { try api.fault(method: "PATCH", pathContains: "/ocirepositories/podinfo", status: 409, count: 10) }
        await #expect(throws: KubeError.self) {
            _ = try await client.mergePatch(patch, resource: .ociRepository, namespace: "flux-system", name: "podinfo")
        }
        do {
            _ = try await client.mergePatch(patch, resource: .ociRepository, namespace: "flux-system", name: "podinfo")
            Issue.record("expected the remaining 409s")
        } catch {
            #expect(error.code == 409)
            #expect(error.description.contains("the object has been modified"))
        }
        // Missing object: 404 with the API server's message.
        do {
            _ = try await client.mergePatch(patch, resource: .ociRepository, namespace: "flux-system", name: "missing")
            Issue.record("expected 404")
        } catch {
            #expect(error.code == 404)
            #expect(error.description.contains(#""missing" not found"#))
        }
        // No ExternalArtifact CRD (Flux < 2.7): the error says so.
        let writer = ExternalArtifactWriter(client: client, namespace: "flux-system", baseURL: "http://agent:9090", names: [:])
        do {
            try await writer.publish(Self.record("main@sha1:\(Self.commitA)", digest: Self.digestA))
            Issue.record("expected 404 for the missing CRD")
        } catch {
            #expect(error.code == 404)
            #expect(error.description.contains("Flux 2.7"), "\(error)")
        }
        // A wrong token: 401, not retried, and the message points at the credentials.
        let wrong = dir.appending("kubeconfig-wrong")
        try api.writeKubeconfig(to: wrong, token: "expired")
        let refused = try KubeClient(connection: try KubeConnection.kubeconfig(path: wrong.path), logger: Self.logger)
        _ = try await offPool { try api.control("DELETE", "requests") }
        do {
            _ = try await refused.list(.ociRepository, namespace: nil, as: OCIRepositoryNudger.OCIRepositoryItem.self)
            Issue.record("expected 401")
        } catch {
            #expect(error.code == 401)
            #expect(error.description.contains("credentials"))
        }
        #expect(try await offPool { try api.requests() }.count == 1)
        await client.shutdown()
        await refused.shutdown()
    }

    @Test func kubeconfigProblemsAreNamed() throws {
        let dir = try TemporaryDirectory(prefix: "kubeconfig")
        defer { dir.remove() }
        let file = dir.appending("config")
        try """
            apiVersion: v1
            kind: Config
            clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
            users: [{name: u, user: {exec: {command: aws}}}]
            contexts: [{name: x, context: {cluster: c, user: u}}]
            current-context: x
            """.write(to: file, atomically: true, encoding: .utf8)
        #expect { try KubeConnection.kubeconfig(path: file.path) } throws: { "\($0)".contains("exec") }
        #expect { try KubeConnection.kubeconfig(path: file.path, context: "nope") } throws: { "\($0)".contains("no context 'nope'") }
        #expect { try KubeConnection.inCluster(environment: [:]) } throws: { "\($0)".contains("KUBERNETES_SERVICE_HOST") }
    }
}
