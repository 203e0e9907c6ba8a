import Foundation
import Testing
import Yams

/// deploy/examples: every example builds with `kubectl kustomize` and wires Flux to the agent
/// the way the agent serves it.
@Suite struct DeployExamplesTests {
    static let examples = InteropTests.repoRoot.appendingPathComponent("deploy/examples")

    static func build(_ name: String) throws -> [[String: Any]] {
        let kubectl = try #require(findExecutable("kubectl"), "kubectl (with its built-in kustomize) is needed to check deploy/")
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
