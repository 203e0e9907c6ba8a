import ArtifactMirror
import Foundation
import Synchronization

/// What the Flux-facing endpoint serves, computed from the store's records: one OCI
/// repository per source with its tags and manifests, and every stored artifact by digest.
/// Immutable; `CatalogHolder` swaps in a new one after each publication.
public struct FluxCatalog: Sendable {
    public struct Repository: Sendable {
        public let name: String
        public let source: String
        /// Tag → manifest digest.
        public let tags: [String: String]
        /// Manifest digest → manifest (every retained revision of the source).
        public let manifests: [String: OCIManifest]
        /// Layer digest → size: the blobs this repository may serve besides its config.
        public let layers: [String: UInt64]
        /// The relay's cosign signatures, as `cosign sign` stores them: signature manifest
        /// digest → its bytes (tagged `sha256-<hex>.sig` after the signed manifest).
        public let signatureManifests: [String: Data]
        /// Digest → bytes of the signatures' config and payload blobs (small, kept in memory).
        public let signatureBlobs: [String: Data]
        /// Digest → bytes of Helm charts' and OCI artifacts' configs and small layers.
        public let payloadBlobs: [String: Data]
    }

    public let repositories: [String: Repository]
    /// Artifact digest → size, for the plain artifact URLs.
    public let artifacts: [String: UInt64]
    /// Source → the current record (what `latest` points at).
    public let current: [String: ArtifactRecord]

    public static let empty = FluxCatalog(records: [], repositoryPrefix: nil)

    /// Digests of every manifest served (what stored signatures may be kept for).
    public var manifestDigests: Set<String> { Set(repositories.values.flatMap(\.manifests.keys)) }

    /// `records` in the store's order: per source, most recent first. `signature` gives the
    /// relay's signature of a manifest digest, when one is stored.
    public init(records: [ArtifactRecord], repositoryPrefix: String?,
                signature: (String) -> CosignSignature? = { _ in nil }) {
        var bySource: [String: [ArtifactRecord]] = [:]
        var order: [String] = []
        for record in records {
            if bySource[record.source] == nil { order.append(record.source) }
            bySource[record.source, default: []].append(record)
        }
        var repositories: [String: Repository] = [:]
        var current: [String: ArtifactRecord] = [:]
        for source in order {
            let records = bySource[source]!
            guard let name = OCINames.repository(forSource: source, prefix: repositoryPrefix) else { continue }
            current[source] = records[0]
            var tags: [String: String] = [:]
            var manifests: [String: OCIManifest] = [:]
            var layers: [String: UInt64] = [:]
            var signatureManifests: [String: Data] = [:]
            var signatureBlobs: [String: Data] = [:]
            var payloadBlobs: [String: Data] = [:]
            for (index, record) in records.enumerated() {
                let manifest = OCIManifest(record: record)
                manifests[manifest.digest] = manifest
                layers[record.digest] = record.size
                // Newer records win a tag; `latest` is the current one. A chart is tagged with
                // its version, an OCI artifact with its upstream tag.
                var names = record.oci?.tags ?? OCINames.tags(forRevision: record.revision, commit: OCINames.commit(inRevision: record.revision) ?? record.commit)
                for (digest, data) in record.oci?.blobs ?? [:] { payloadBlobs[digest] = data }
                if index == 0 { names.insert("latest", at: 0) }
                for tag in names where tags[tag] == nil { tags[tag] = manifest.digest }
                // The relay's signature and the publisher's (a mirrored OCI artifact's upstream
                // `.sig`), one layer each in one signature image: cosign and Flux accept the
                // image when any layer verifies under the key they are given.
                var layers = signature(manifest.digest).map { [$0.layer] } ?? []
                layers += (record.oci?.signatureLayers ?? []).map {
                    CosignSignature.ImageLayer(mediaType: $0.mediaType, data: $0.data, annotations: $0.annotations)
                }
                if !layers.isEmpty {
                    let image = CosignSignature.image(layers: layers)
                    let digest = OCIManifest.digest(of: image.manifest)
                    signatureManifests[digest] = image.manifest
                    tags[CosignSignature.tag(forManifest: manifest.digest)] = digest
                    signatureBlobs[OCIManifest.digest(of: image.config)] = image.config
                    for layer in layers { signatureBlobs[OCIManifest.digest(of: layer.data)] = layer.data }
                }
            }
            repositories[name] = Repository(name: name, source: source, tags: tags, manifests: manifests, layers: layers,
                                             signatureManifests: signatureManifests, signatureBlobs: signatureBlobs,
                                             payloadBlobs: payloadBlobs)
        }
        self.repositories = repositories
        self.current = current
        artifacts = Dictionary(records.map { ($0.digest, $0.size) }, uniquingKeysWith: { first, _ in first })
    }
}

/// Holds the catalog the endpoint serves right now.
public final class CatalogHolder: Sendable {
    private let value = Mutex(FluxCatalog.empty)
    private let loaded = Atomic<Bool>(false)
    let store: ArtifactStore
    let repositoryPrefix: String?
    /// The relay's signatures served beside the artifacts (none when nil).
    let signatures: SignatureStore?

    /// With `trust`: only records whose stored signature verifies are served (an artifact
    /// published before `trust` was set, or signed by a key since removed, is not).
    let trusted: RelaySignatureCheck?

    public init(store: ArtifactStore, repositoryPrefix: String?, signatures: SignatureStore? = nil, trusted: RelaySignatureCheck? = nil) {
        self.store = store
        self.repositoryPrefix = repositoryPrefix
        self.signatures = signatures
        self.trusted = trusted?.keys == nil ? nil : trusted
    }

    public var catalog: FluxCatalog { value.withLock { $0 } }
    /// True once the store has been read (the endpoint's readiness).
    public var isLoaded: Bool { loaded.load(ordering: .acquiring) }

    /// Re-reads the store's index.
    public func reload() throws {
        let all = try store.allRecords()
        // Each signature file is read once, for both the trust check and the `.sig` tags.
        var onFile: [String: CosignSignature] = [:]
        if let signatures {
            for record in all {
                let digest = OCIManifest(record: record).digest
                if onFile[digest] == nil, let signature = signatures.signature(forManifest: digest) { onFile[digest] = signature }
            }
        }
        let records = trusted.map { trusted in all.filter { trusted.verifies(onFile[OCIManifest(record: $0).digest], for: $0) } } ?? all
        let catalog = FluxCatalog(records: records, repositoryPrefix: repositoryPrefix) { onFile[$0] }
        value.withLock { $0 = catalog }
        loaded.store(true, ordering: .releasing)
        // Signatures of manifests no longer served go (one directory listing; recent files
        // stay: a signature is written just before its artifact is published).
        signatures?.prune(keeping: catalog.manifestDigests)
    }

    public func path(forDigest digest: String) -> String { store.path(forDigest: digest).path }
}

/// Names as the OCI distribution spec allows them.
public enum OCINames {
    /// One path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
    static func isComponent<S: StringProtocol>(_ text: S) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, isAlnum(first), isAlnum(last) else { return false }
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if isAlnum(byte) { index += 1; continue }
            // A separator run: ".", "_", "__" or one or more "-", followed by an alphanumeric.
            var end = index
            while end < bytes.count, !isAlnum(bytes[end]) { end += 1 }
            let run = bytes[index..<end]
            let ok = run.elementsEqual([UInt8(ascii: ".")]) || run.elementsEqual([UInt8(ascii: "_")])
                || run.elementsEqual([UInt8(ascii: "_"), UInt8(ascii: "_")]) || run.allSatisfy { $0 == UInt8(ascii: "-") }
            guard ok else { return false }
            index = end
        }
        return true
    }

    private static func isAlnum(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }

    /// A full repository name: components separated by "/", at most 255 characters.
    public static func isRepository(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && name.split(separator: "/", omittingEmptySubsequences: false).allSatisfy(isComponent)
    }

    /// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    public static func isTag<S: StringProtocol>(_ tag: S) -> Bool {
        let bytes = Array(tag.utf8)
        guard let first = bytes.first, bytes.count <= 128 else { return false }
        func word(_ byte: UInt8) -> Bool {
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
        }
        return word(first) && bytes.allSatisfy { word($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `sha256:<64 lowercase hex>`, the only digests this endpoint ever serves.
    public static func isSHA256Digest<S: StringProtocol>(_ text: S) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) }
    }

    /// The repository serving a source: the source name (prefixed), made valid when the
    /// source name alone is not (runs of separators collapsed, ends trimmed).
    public static func repository(forSource source: String, prefix: String?) -> String? {
        var name = ""
        var pendingSeparator: Character?
        for character in source.lowercased() {
            if character.isASCII, character.isLetter || character.isNumber {
                if let separator = pendingSeparator, !name.isEmpty { name.append(separator) }
                pendingSeparator = nil
                name.append(character)
            } else if pendingSeparator == nil {
                pendingSeparator = character == "." || character == "_" ? character : "-"
            }
        }
        guard !name.isEmpty else { return nil }
        let full = prefix.map { "\($0)/\(name)" } ?? name
        return isRepository(full) ? full : nil
    }

    /// The commit a Flux revision names (`<ref>@sha1:<hex>` or `sha1:<hex>`): the short-commit
    /// tag comes from the revision, which the relay's signature covers, not from the separate
    /// commit field, which it does not.
    static func commit(inRevision revision: String) -> String? {
        guard let range = revision.range(of: "sha1:", options: .backwards) else { return nil }
        let hex = revision[range.upperBound...]
        return hex.count >= 7 && hex.allSatisfy(\.isHexDigit) ? String(hex) : nil
    }

    /// Tags for one revision: its branch or tag name (made tag-safe: `feature/x` becomes
    /// `feature-x`) and the short commit.
    public static func tags(forRevision revision: String, commit: String) -> [String] {
        var tags: [String] = []
        if let at = revision.range(of: "@", options: .backwards) {
            let reference = revision[..<at.lowerBound]
            var tag = String(reference.map { ($0.isASCII && ($0.isLetter || $0.isNumber)) || "._-".contains($0) ? $0 : "-" })
            while let first = tag.first, first == "." || first == "-" { tag.removeFirst() }
            tag = String(tag.prefix(128))
            if isTag(tag) { tags.append(tag) }
        }
        if commit.count >= 7 { tags.append(String(commit.prefix(7))) }
        return tags
    }
}
