import Foundation

/// The kube-apiserver stand-in (Fixtures/kube-standin/kube_apiserver_standin.py) as a
/// process: HTTPS with the test CA, bearer-token auth, and its `/_standin/` control API.
/// It is NOT Kubernetes: kube-apiserver cannot run here, so the stand-in follows the
/// upstream API contract for the calls relay-agent makes (see its docstring).
final class KubeStandIn: @unchecked Sendable {
    let process: BackgroundProcess
    let port: Int
    let token: String
    let tls: TestTLS
    var server: String { "https://127.0.0.1:\(port)" }

    init(dir: TemporaryDirectory, token: String = "sa-token", crdMissing: [String] = []) throws {
        self.token = token
        tls = try TestTLS.shared()
        let script = InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/kube-standin/kube_apiserver_standin.py").path
        let log = dir.appending("kube-standin.log")
        process = try BackgroundProcess(
            name: "kube-standin", executable: findExecutable("python3") ?? "/usr/bin/python3",
            arguments: [script, "--port", "0", "--token", token, "--tls-cert", tls.certFile.path, "--tls-key", tls.keyFile.path,
                        "--max-seconds", "300"] + crdMissing.flatMap { ["--crd-missing", $0] },
            logFile: log)
        var found: Int?
        let deadline = Date().addingTimeInterval(20)
        while found == nil, Date() < deadline {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening ") }) {
                found = Int(line.dropFirst("listening ".count))
            } else {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        guard let found else {
            process.stop()
            throw HarnessError.timedOut("kube stand-in to listen", relayLog: (try? String(contentsOf: log, encoding: .utf8)) ?? "", agentLogs: [])
        }
        port = found
    }

    func stop() { process.stop() }

    /// A kubeconfig for the stand-in (token user, CA data inline).
    func writeKubeconfig(to url: URL, token: String? = nil) throws {
        let ca = try Data(contentsOf: tls.caFile).base64EncodedString()
        try """
            apiVersion: v1
            kind: Config
            clusters:
            - name: standin
              cluster: {server: "\(server)", certificate-authority-data: \(ca)}
            users:
            - name: agent
              user: {token: \(token ?? self.token)}
            contexts:
            - name: standin
              context: {cluster: standin, user: agent, namespace: relay-system}
            current-context: standin

            """.write(to: url, atomically: true, encoding: .utf8)
    }

    @discardableResult
    func control(_ method: String, _ path: String, _ body: Any? = nil) throws -> Any? {
        let data = try body.map { try JSONSerialization.data(withJSONObject: $0) }
        let answer = try HTTPProbe.request(server + "/_standin/" + path, method: method,
                                           headers: ["Content-Type: application/json"],
                                           body: data, caFile: tls.caFile.path)
        guard (200..<300).contains(answer.status) else { throw KubeStandInError.control("\(method) \(path): \(answer.status) \(answer.text)") }
        return try? JSONSerialization.jsonObject(with: answer.body)
    }

    /// Every /apis request so far: method, path, query, contentType, authorization, body, status.
    func requests() throws -> [[String: Any]] { try control("GET", "requests") as? [[String: Any]] ?? [] }
    func objects() throws -> [[String: Any]] { try control("GET", "objects") as? [[String: Any]] ?? [] }
    func object(_ kind: String, _ namespace: String, _ name: String) throws -> [String: Any]? {
        try objects().first {
            $0["kind"] as? String == kind && ($0["metadata"] as? [String: Any])?["name"] as? String == name
                && ($0["metadata"] as? [String: Any])?["namespace"] as? String == namespace
        }
    }
    func seed(_ object: [String: Any]) throws { try control("POST", "objects", object) }
    func fault(method: String, pathContains: String, status: Int, count: Int) throws {
        try control("POST", "faults", ["method": method, "pathContains": pathContains, "status": status, "count": count])
    }

    static func ociRepository(_ name: String, namespace: String = "flux-system", url: String) -> [String: Any] {
        ["apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
         "metadata": ["name": name, "namespace": namespace],
         "spec": ["interval": "10m", "url": url, "insecure": true, "ref": ["tag": "main"]]]
    }
}

enum KubeStandInError: Error { case control(String) }

/// Runs blocking work (processes, curl) off the two-thread cooperative pool, so async tests
/// can mix it with async clients without starving them. Results cross threads once, handed
/// over whole (JSON values from the control API are not Sendable).
func offPool<T>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    let handover: Handover<T> = await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: Handover(result: Result { try body() })) }
    }
    return try handover.result.get()
}

struct Handover<T>: @unchecked Sendable { let result: Result<T, any Error> }

extension KubeStandIn {
    /// A Flux Kustomization consuming an OCIRepository, with a status as kustomize-controller writes it.
    static func kustomization(_ name: String, namespace: String = "flux-system", sourceKind: String = "OCIRepository",
                              source: String, status: [String: Any]) -> [String: Any] {
        ["apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
         "metadata": ["name": name, "namespace": namespace],
         "spec": ["interval": "10m", "path": "./apps", "prune": true, "sourceRef": ["kind": sourceKind, "name": source]],
         "status": status]
    }

    /// kustomize-controller's status while reconciling, and after applying `revision`.
    static func progressingStatus(attempting revision: String? = nil) -> [String: Any] {
        let now = "2026-11-21T10:00:00Z"
        var status: [String: Any] = ["observedGeneration": 1, "conditions": [
            ["type": "Reconciling", "status": "True", "reason": "Progressing", "message": "Reconciliation in progress",
             "lastTransitionTime": now, "observedGeneration": 1],
            ["type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Reconciliation in progress",
             "lastTransitionTime": now, "observedGeneration": 1],
        ]]
        if let revision { status["lastAttemptedRevision"] = revision }
        return status
    }

    static func readyStatus(revision: String) -> [String: Any] {
        ["observedGeneration": 1, "lastAppliedRevision": revision, "lastAttemptedRevision": revision, "conditions": [
            ["type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision: \(revision)",
             "lastTransitionTime": "2026-11-21T10:01:00Z", "observedGeneration": 1],
        ]]
    }

    static func failingStatus(revision: String, message: String) -> [String: Any] {
        ["observedGeneration": 1, "lastAttemptedRevision": revision, "conditions": [
            ["type": "Ready", "status": "False", "reason": "HealthCheckFailed", "message": message,
             "lastTransitionTime": "2026-11-21T10:02:00Z", "observedGeneration": 1],
        ]]
    }

    /// Writes an object's status as its controller would: a merge patch on /status that
    /// replaces `status` (null first clears fields the new status leaves out).
    func setStatus(group: String, version: String, plural: String, namespace: String, name: String, status: [String: Any]) throws {
        let path = "/apis/\(group)/\(version)/namespaces/\(namespace)/\(plural)/\(name)/status"
        for body in [["status": NSNull()], ["status": status]] as [[String: Any]] {
            let answer = try HTTPProbe.request(server + path, method: "PATCH",
                                               headers: ["Content-Type: application/merge-patch+json", "Authorization: Bearer \(token)"],
                                               body: try JSONSerialization.data(withJSONObject: body), caFile: tls.caFile.path)
            guard answer.status == 200 else { throw KubeStandInError.control("status patch: \(answer.status) \(answer.text)") }
        }
    }
}
