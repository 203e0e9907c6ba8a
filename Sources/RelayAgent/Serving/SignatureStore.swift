import ArtifactMirror
import Foundation
import Provenance

/// The relay's cosign signatures of the manifests the agent serves, one small file per
/// manifest (`<dataDir>/signatures/<hex>.json`). A signature is written before its artifact
/// is published, so the catalog that serves the artifact can also serve its `.sig` tag.
public struct SignatureStore: Sendable {
    public let directory: URL

    public init(directory: URL) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    private func path(forManifest digest: String) -> String {
        directory.appendingPathComponent(digest.replacingOccurrences(of: "sha256:", with: "") + ".json").path
    }

    /// Stores (replaces) the signature of manifest `digest`, atomically and durably.
    public func save(_ signature: CosignSignature, forManifest digest: String) throws {
        guard SHA256Digest(digest) != nil else { throw ArtifactMirrorError.invalidArgument("not a manifest digest: \(digest.prefix(80))") }
        let data = try JSONEncoder().encode(signature)
        try FileSystem.writeAtomically(data, to: path(forManifest: digest))
    }

    public func signature(forManifest digest: String) -> CosignSignature? {
        guard SHA256Digest(digest) != nil, let data = FileManager.default.contents(atPath: path(forManifest: digest)) else { return nil }
        return try? JSONDecoder().decode(CosignSignature.self, from: data)
    }

    /// Deletes signatures of manifests no longer served, except those written in the last
    /// `grace` seconds (saved for an artifact that is being published right now).
    public func prune(keeping digests: Set<String>, grace: TimeInterval = 600) {
        let keep = Set(digests.map { $0.replacingOccurrences(of: "sha256:", with: "") + ".json" })
        let cutoff = Date().addingTimeInterval(-grace)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasSuffix(".json") && !keep.contains(name) {
            let path = directory.appendingPathComponent(name).path
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? .distantPast
            if modified < cutoff { unlink(path) }
        }
    }
}
