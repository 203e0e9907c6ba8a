import Foundation
import Provenance
import Testing
import Yams

/// deploy/examples: every example builds with `kubectl kustomize` and wires Flux to the agent
/// the way the agent serves it.
@Suite struct DeployExamplesTests {
    static let examples = InteropTests.repoRoot.appendingPathComponent("deploy/examples")

    /// kubectl from PATH, or the one scripts/setup-python.sh put into the venv.
    static func kubectl() throws -> String? {
        if let found = findExecutable("kubectl") { return found }
        _ = try InteropTests.python()
        let venv = InteropTests.repoRoot.appendingPathComponent(".venv-interop/bin/kubectl").path
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : nil
    }

    static func build(_ name: String) throws -> [[String: Any]] {
        let kubectl = try #require(try Self.kubectl(), "kubectl (with its built-in kustomize) is needed to check deploy/: scripts/setup-python.sh installs one")
        let output = try runProcess(kubectl, ["kustomize", examples.appendingPathComponent(name).path])
        return try Yams.load_all(yaml: output.stdout).compactMap { $0 as? [String: Any] }
    }

    static func find(_ objects: [[String: Any]], _ kind: String) -> [String: Any]? {
        objects.first { $0["kind"] as? String == kind }
    }

    @Test func ociExampleBuildsAndPointsAnOCIRepositoryAtTheAgent() throws {
        let objects = try Self.build("oci")
        let repository = try #require(Self.find(objects, "OCIRepository"))
        #expect(repository["apiVersion"] as? String == "source.toolkit.fluxcd.io/v1")
        let spec = try #require(repository["spec"] as? [String: Any])
        let url = try #require(spec["url"] as? String)
        #expect(url.hasPrefix("oci://") && url.hasSuffix("/podinfo"))
        #expect(spec["insecure"] as? Bool == true)  // plain HTTP on a cluster DNS name (spec §4.2)
        #expect((spec["ref"] as? [String: Any])?["tag"] as? String == "main")
        let kustomization = try #require(Self.find(objects, "Kustomization"))
        #expect(kustomization["apiVersion"] as? String == "kustomize.toolkit.fluxcd.io/v1")
        let sourceRef = (kustomization["spec"] as? [String: Any])?["sourceRef"] as? [String: Any]
        #expect(sourceRef?["kind"] as? String == "OCIRepository")
        #expect(sourceRef?["name"] as? String == (repository["metadata"] as? [String: Any])?["name"] as? String)
    }

    @Test func externalArtifactExampleBuildsAndConsumesTheAgentsExternalArtifact() throws {
        let objects = try Self.build("external-artifact")
        let kustomization = try #require(Self.find(objects, "Kustomization"))
        let sourceRef = (kustomization["spec"] as? [String: Any])?["sourceRef"] as? [String: Any]
        #expect(sourceRef?["kind"] as? String == "ExternalArtifact")
        // The agent names the ExternalArtifact after the source, in flux-system by default.
        #expect(sourceRef?["name"] as? String == "podinfo")
        #expect((kustomization["metadata"] as? [String: Any])?["namespace"] as? String == "flux-system")
    }

    @Test func receiverExampleBuilds() throws {
        let objects = try Self.build("receiver")
        let receiver = try #require(Self.find(objects, "Receiver"))
        #expect((receiver["spec"] as? [String: Any])?["type"] as? String == "generic-hmac")
        #expect(Self.find(objects, "Secret") != nil)
    }
}

extension DeployExamplesTests {
    @Test func eventsExampleSendsFluxEventsToTheAgent() throws {
        let objects = try Self.build("events")
        let provider = try #require(Self.find(objects, "Provider"))
        let spec = try #require(provider["spec"] as? [String: Any])
        #expect(spec["type"] as? String == "generic-hmac")
        #expect((spec["address"] as? String)?.hasSuffix("/flux/events") == true)
        let alert = try #require(Self.find(objects, "Alert"))
        #expect(((alert["spec"] as? [String: Any])?["providerRef"] as? [String: Any])?["name"] as? String == "relay-agent")
    }
}

/// deploy/: every Kustomize directory (bases, overlays, examples) builds, and every rendered
/// object passes offline schema validation (kubernetes-validate's Kubernetes 1.32 schemas for
/// built-in kinds, the validator's own JSON Schemas for the Flux kinds).
@Suite struct DeployValidationTests {
    static let script = InteropTests.repoRoot.appendingPathComponent("Tests/RelayTests/Fixtures/deploy/validate.py").path

    @Test func everyOverlayBuildsAndEveryObjectValidates() throws {
        let python = try InteropTests.python()
        let kubectl = try #require(try DeployExamplesTests.kubectl())
        let output = try runProcess(python, [Self.script, "--kubectl", kubectl], timeout: 300, allowFailure: true)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any], "\(output.stderr)")
        #expect(output.status == 0, "\(report["errors"] ?? output.stderr)")
        #expect((report["errors"] as? [Any])?.isEmpty == true)
        #expect((report["directories"] as? Int ?? 0) >= 10)
        #expect((report["objects"] as? Int ?? 0) >= 50)
    }

    @Test func theValidatorRejectsABrokenObject() throws {
        let python = try InteropTests.python()
        let dir = try TemporaryDirectory(prefix: "deploy-broken")
        defer { dir.remove() }
        let broken = dir.appending("broken.yaml")
        try """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: relay-agent, namespace: relay-system}
            spec:
              replicas: "two"
              selector: {matchLabels: {app: relay-agent}}
              template:
                metadata: {labels: {app: relay-agent}}
                spec: {containers: [{name: agent, image: relay-agent:1}]}
            """.write(to: broken, atomically: true, encoding: .utf8)
        let output = try runProcess(python, [Self.script, "--file", broken.path], timeout: 120, allowFailure: true)
        #expect(output.status == 1)
        #expect(output.stdout.contains("spec.replicas"), "\(output.stdout)")
    }
}

extension DeployExamplesTests {
    /// The OCIRepository verifies the relay's cosign signature with the key in the Secret it
    /// names (a `.pub` data key holding one PEM PUBLIC KEY, as Flux reads it).
    @Test func ociExampleVerifiesTheRelaysSignatureWithTheSecretsPublicKey() throws {
        let objects = try Self.build("oci")
        let spec = try #require(Self.find(objects, "OCIRepository")?["spec"] as? [String: Any])
        let verify = try #require(spec["verify"] as? [String: Any])
        #expect(verify["provider"] as? String == "cosign")
        let secretName = try #require((verify["secretRef"] as? [String: Any])?["name"] as? String)
        let secret = try #require(objects.first { $0["kind"] as? String == "Secret" && ($0["metadata"] as? [String: Any])?["name"] as? String == secretName })
        let data = try #require(secret["stringData"] as? [String: String])
        let keys = data.filter { $0.key.hasSuffix(".pub") }
        #expect(keys.count == 1)
        #expect(try TrustedKey.parse(pem: try #require(keys.first?.value), path: "relay.pub").count == 1)
    }
}

extension DeployExamplesTests {
    /// Both Flux paths for a relay Helm source (helm-oci.md): HelmRepository type oci +
    /// HelmRelease.spec.chart, and OCIRepository with the chart layer selected + chartRef.
    @Test func helmExamplesWireBothFluxPathsToTheAgent() throws {
        let pathA = try Self.build("helm-oci")
        let repository = try #require(Self.find(pathA, "HelmRepository"))
        let repositorySpec = try #require(repository["spec"] as? [String: Any])
        #expect(repositorySpec["type"] as? String == "oci")
        #expect((repositorySpec["url"] as? String)?.hasPrefix("oci://") == true)
        #expect(repositorySpec["insecure"] as? Bool == true)
        let releaseA = try #require((Self.find(pathA, "HelmRelease")?["spec"] as? [String: Any])?["chart"] as? [String: Any])
        let chartSpec = try #require(releaseA["spec"] as? [String: Any])
        #expect(chartSpec["chart"] as? String == "podinfo")
        #expect((chartSpec["sourceRef"] as? [String: Any])?["name"] as? String == (repository["metadata"] as? [String: Any])?["name"] as? String)

        let pathB = try Self.build("helm-chartref")
        let oci = try #require(Self.find(pathB, "OCIRepository"))
        let ociSpec = try #require(oci["spec"] as? [String: Any])
        #expect((ociSpec["url"] as? String)?.hasSuffix("/podinfo") == true)
        let selector = try #require(ociSpec["layerSelector"] as? [String: Any])
        #expect(selector["mediaType"] as? String == "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
        #expect(selector["operation"] as? String == "copy")
        let chartRef = try #require((Self.find(pathB, "HelmRelease")?["spec"] as? [String: Any])?["chartRef"] as? [String: Any])
        #expect(chartRef["kind"] as? String == "OCIRepository")
        #expect(chartRef["name"] as? String == (oci["metadata"] as? [String: Any])?["name"] as? String)
    }
}
