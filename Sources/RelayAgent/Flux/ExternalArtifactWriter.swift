import ArtifactMirror
import Foundation

/// Keeps one `ExternalArtifact` per source (spec §5.1): server-side applies the object, then
/// its `status` through the status subresource (a second request: status sent with the main
/// resource is dropped by the API server). A new `status.artifact.revision` is what wakes
/// kustomize-controller and helm-controller; no annotation is needed.
public struct ExternalArtifactWriter: Sendable {
    let client: KubeClient
    let namespace: String
    /// Base URL Flux uses to reach the agent's artifact endpoint.
    let baseURL: String
    /// Source → object name, where the operator chose one.
    let names: [String: String]

    public init(client: KubeClient, namespace: String, baseURL: String, names: [String: String]) {
        self.client = client
        self.namespace = namespace
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.names = names
    }

    /// The object name for a source: the configured one, else the source name made a valid
    /// DNS-1123 subdomain.
    public func name(forSource source: String) -> String? {
        names[source] ?? OCINames.repository(forSource: source, prefix: nil)?.replacingOccurrences(of: "_", with: "-")
    }

    /// Applies the object and its status for `record`. Returns the object's name.
    @discardableResult
    public func publish(_ record: ArtifactRecord, now: Date = Date()) async throws(KubeError) -> String {
        guard let name = name(forSource: record.source) else {
            throw .configuration("source '\(record.source)' gives no valid ExternalArtifact name; set one under flux.externalArtifacts.names")
        }
        let object = EAObject(metadata: .init(name: name, namespace: namespace, labels: [
            "app.kubernetes.io/managed-by": "relay-agent",
            "relay.fluxcd.io/source": String(name.prefix(63)),
        ]))
        let stored = try await client.apply(object, resource: .externalArtifact, namespace: namespace, name: name)
        let current = try? JSONDecoder().decode(EAReadBack.self, from: stored)
        let hex = String(record.digest.dropFirst("sha256:".count))
        let timestamp = OCIManifest.timestamp(now)
        // Ready stays True across publications: keep its transition time.
        let previous = current?.status?.conditions?.first { $0.type == "Ready" }
        let transition = previous?.status == "True" ? previous?.lastTransitionTime ?? timestamp : timestamp
        var metadata = ["org.opencontainers.image.revision": record.revision]
        if let origin = record.origin { metadata["org.opencontainers.image.source"] = origin }
        let status = EAStatusObject(metadata: .init(name: name, namespace: namespace), status: .init(
            artifact: .init(digest: record.digest, lastUpdateTime: timestamp, path: "externalartifact/\(namespace)/\(name)/\(hex).tar.gz",
                            revision: record.revision, size: Int64(record.size), url: "\(baseURL)/artifacts/sha256/\(hex).tar.gz",
                            metadata: metadata),
            conditions: [.init(type: "Ready", status: "True", reason: "Succeeded", message: "Artifact is ready",
                               lastTransitionTime: transition, observedGeneration: current?.metadata.generation)],
            observedGeneration: current?.metadata.generation))
        _ = try await client.apply(status, resource: .externalArtifact, namespace: namespace, name: name, subresource: "status")
        return name
    }
}

// The shapes sent and read. Field names are the CRD's (source.toolkit.fluxcd.io/v1).

struct EAObject: Encodable {
    var apiVersion = KubeResource.externalArtifact.apiVersion
    var kind = KubeResource.externalArtifact.kind
    var metadata: KubeObjectMeta
    var spec = Spec()
    struct Spec: Encodable {}
}

struct EAStatusObject: Encodable {
    var apiVersion = KubeResource.externalArtifact.apiVersion
    var kind = KubeResource.externalArtifact.kind
    var metadata: KubeObjectMeta
    var status: Status

    struct Status: Codable {
        var artifact: Artifact
        var conditions: [Condition]
        var observedGeneration: Int64?
    }
}

/// `meta.Artifact` (spec §2).
struct Artifact: Codable, Equatable {
    var digest: String
    var lastUpdateTime: String
    var path: String
    var revision: String
    var size: Int64?
    var url: String
    var metadata: [String: String]?
}

/// `metav1.Condition`.
struct Condition: Codable, Equatable {
    var type: String
    var status: String
    var reason: String
    var message: String
    var lastTransitionTime: String
    var observedGeneration: Int64?
}

struct EAReadBack: Decodable {
    var metadata: KubeObjectMeta
    var status: ReadStatus?
    struct ReadStatus: Decodable { var conditions: [Condition]? }
}
