import ArtifactMirror
import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import Provenance

/// Wakes Flux after a publication (spec §6): merge-patches
/// `reconcile.fluxcd.io/requestedAt` on every `OCIRepository` whose `spec.url` points at this
/// agent's repository for the source.
public struct OCIRepositoryNudger: Sendable {
    let client: KubeClient
    /// `host[:port]` values under which Flux reaches this agent (from flux.url, plus aliases).
    let hosts: Set<String>
    /// Namespaces to look in; nil means all (needs cluster-wide list permission).
    let namespaces: [String]?
    let repositoryPrefix: String?

    public init(client: KubeClient, hosts: Set<String>, namespaces: [String]?, repositoryPrefix: String?) {
        self.client = client
        self.hosts = Set(hosts.map { $0.lowercased() })
        self.namespaces = namespaces
        self.repositoryPrefix = repositoryPrefix
    }

    struct OCIRepositoryItem: Decodable, Sendable {
        var metadata: KubeObjectMeta
        var spec: Spec?
        struct Spec: Decodable, Sendable { var url: String? }
    }

    struct AnnotationPatch: Encodable {
        struct Metadata: Encodable { var annotations: [String: String] }
        var metadata: Metadata
    }

    /// Whether an `oci://host[:port]/repo` URL names a repository on this agent.
    struct Matcher: Sendable {
        let hosts: Set<String>

        func pointsHere(_ url: String, repository: String) -> Bool {
            guard url.lowercased().hasPrefix("oci://") else { return false }
            let rest = url.dropFirst("oci://".count)
            guard let slash = rest.firstIndex(of: "/") else { return false }
            let host = rest[..<slash].lowercased()
            return hosts.contains(host) && rest[rest.index(after: slash)...] == repository
        }
    }

    func pointsHere(_ url: String, repository: String) -> Bool {
        Matcher(hosts: hosts).pointsHere(url, repository: repository)
    }

    /// Patches every matching OCIRepository; returns "namespace/name" of each.
    public func nudge(source: String, token: String) async throws(KubeError) -> [String] {
        guard let repository = OCINames.repository(forSource: source, prefix: repositoryPrefix) else { return [] }
        var items: [OCIRepositoryItem] = []
        for namespace in namespaces.map({ $0.map(Optional.some) }) ?? [nil] {
            items += try await client.list(.ociRepository, namespace: namespace, as: OCIRepositoryItem.self)
        }
        var nudged: [String] = []
        for item in items where pointsHere(item.spec?.url ?? "", repository: repository) {
            guard let namespace = item.metadata.namespace else { continue }
            let patch = AnnotationPatch(metadata: .init(annotations: ["reconcile.fluxcd.io/requestedAt": token]))
            _ = try await client.mergePatch(patch, resource: .ociRepository, namespace: namespace, name: item.metadata.name)
            nudged.append("\(namespace)/\(item.metadata.name)")
        }
        return nudged
    }
}

/// POSTs to notification-controller `Receiver` webhooks (spec §6.3): `generic` receivers take
/// any body; `generic-hmac` ones need `X-Signature: sha256=<hex HMAC of the body>`.
public struct ReceiverCaller: Sendable {
    public struct Target: Sendable {
        public var url: String
        public var hmacKey: String?
        public init(url: String, hmacKey: String?) { self.url = url; self.hmacKey = hmacKey }
    }

    let targets: [Target]
    let http: HTTPClient

    public init(targets: [Target], http: HTTPClient) {
        self.targets = targets
        self.http = http
    }

    public func call(_ record: ArtifactRecord) async throws {
        let body = try JSONSerialization.data(withJSONObject: [
            "source": record.source, "revision": record.revision, "digest": record.digest,
        ], options: [.sortedKeys, .withoutEscapingSlashes])
        for target in targets {
            var request = HTTPClientRequest(url: target.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: "User-Agent", value: "relay-agent")
            if let key = target.hmacKey {
                let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(key.utf8)))
                request.headers.add(name: "X-Signature", value: "sha256=" + SHA256Digest.lowercaseHex(mac))
            }
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await http.execute(request, timeout: .seconds(10))
            _ = try? await response.body.collect(upTo: 1 << 16)
            guard (200..<300).contains(Int(response.status.code)) else {
                throw KubeError.transport("receiver \(target.url) answered \(response.status.code)")
            }
        }
    }
}
