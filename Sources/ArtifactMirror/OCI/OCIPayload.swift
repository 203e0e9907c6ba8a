import Crypto
import Foundation

/// A Helm chart or an OCI artifact mirrored from an upstream (relay.yaml `helm:` / `oci:`
/// sources): the OCI manifest to serve, byte for byte, with its small blobs. The one large
/// layer (the chart `.tgz`, or the artifact's content) is the record's own `digest`/`size`,
/// stored and fetched like a Git source's tarball.
///
/// Git sources have no payload: their manifest is computed (`OCIManifest`). With a payload the
/// manifest is whatever the upstream (or `helm push`'s layout) made, so the digest a client
/// computes equals the upstream's and the relay's signature covers every blob through it.
public struct OCIPayload: Sendable, Codable, Hashable {
    public enum Kind: String, Sendable, Codable, Hashable {
        /// A chart, in the layout `helm push` writes.
        case helm
        /// Any OCI artifact, as its publisher pushed it.
        case oci
    }

    public var kind: Kind
    /// The manifest's exact bytes.
    public var manifest: Data
    /// Its media type, sent as Content-Type.
    public var mediaType: String
    /// Digest → bytes of every blob the manifest names besides the large layer.
    public var blobs: [String: Data]
    /// Tags the agent serves the manifest under.
    public var tags: [String]
    /// The publisher's cosign signatures of the manifest (upstream `sha256-<hex>.sig`), one
    /// per layer; nil or empty when the upstream has none.
    public var signatureLayers: [SignatureLayer]?

    /// One layer of a cosign signature image: a simple-signing payload and its annotations
    /// (`dev.cosignproject.cosign/signature`, …).
    public struct SignatureLayer: Sendable, Codable, Hashable {
        public var mediaType: String
        public var data: Data
        public var annotations: [String: String]
        public init(mediaType: String, data: Data, annotations: [String: String]) {
            self.mediaType = mediaType
            self.data = data
            self.annotations = annotations
        }
    }
    public static let simpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    /// Largest signature payload carried, and most signatures per artifact.
    public static let maxSignatureLayerBytes = 64 << 10
    public static let maxSignatureLayers = 16

    /// Largest manifest accepted (the distribution registry's own limit is 4 MiB).
    public static let maxManifestBytes = 4 << 20
    /// Largest blob carried inline, and all inline blobs together. They travel in the agent's
    /// DesiredState message (gRPC's default limit 4 MiB for all of an agent's artifacts), so
    /// a payload stays well under it: the manifest, small blobs and signatures of one artifact
    /// at most `maxCarriedBytes`.
    public static let maxInlineBlobBytes = 256 << 10
    public static let maxInlineTotalBytes = 512 << 10
    public static let maxCarriedBytes = 768 << 10
    /// Manifest media types served (OCI and Docker schema 2 image manifests).
    public static let manifestMediaTypes: Set<String> = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]
    public static let helmConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
    public static let helmChartMediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    public static let helmProvenanceMediaType = "application/vnd.cncf.helm.chart.provenance.v1.prov"

    public init(kind: Kind, manifest: Data, mediaType: String, blobs: [String: Data], tags: [String],
                signatureLayers: [SignatureLayer]? = nil) {
        self.kind = kind
        self.manifest = manifest
        self.mediaType = mediaType
        self.blobs = blobs
        self.tags = tags
        self.signatureLayers = signatureLayers?.isEmpty == true ? nil : signatureLayers
    }

    /// `sha256:<hex>` of the manifest bytes.
    public var manifestDigest: String { Self.digest(of: manifest) }

    public static func digest(of data: Data) -> String {
        "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// One blob a manifest names.
    public struct Descriptor: Sendable, Codable, Hashable {
        public var mediaType: String
        public var digest: String
        public var size: UInt64
        public var annotations: [String: String]?
    }

    /// The parts of an image manifest this code reads.
    public struct Manifest: Sendable, Decodable {
        public var schemaVersion: Int
        public var mediaType: String?
        public var config: Descriptor
        public var layers: [Descriptor]
        public var annotations: [String: String]?
    }

    /// Parses an image manifest, refusing what Relay does not carry (indexes, schema 1).
    public static func parseManifest(_ bytes: Data, mediaType: String) throws(ArtifactMirrorError) -> Manifest {
        guard bytes.count <= maxManifestBytes else {
            throw .invalidArgument("the manifest is \(bytes.count) bytes, more than the \(maxManifestBytes) accepted")
        }
        guard manifestMediaTypes.contains(mediaType) else {
            throw .invalidArgument("the manifest's media type is '\(mediaType)'; Relay carries image manifests only "
                + "(\(manifestMediaTypes.sorted().joined(separator: ", "))): point the source at one artifact, not an index")
        }
        let manifest: Manifest
        do { manifest = try JSONDecoder().decode(Manifest.self, from: bytes) } catch {
            throw .invalidArgument("the manifest is not a valid image manifest (\(error))")
        }
        guard manifest.schemaVersion == 2 else { throw .invalidArgument("the manifest has schemaVersion \(manifest.schemaVersion), not 2") }
        if let declared = manifest.mediaType, declared != mediaType {
            throw .invalidArgument("the manifest declares media type '\(declared)' but was served as '\(mediaType)'")
        }
        for descriptor in [manifest.config] + manifest.layers where !isSHA256Digest(descriptor.digest) {
            throw .invalidArgument("the manifest names the blob '\(descriptor.digest.prefix(80))': only sha256 digests are accepted")
        }
        return manifest
    }

    /// Checks that the payload describes exactly one large layer, `layerDigest` of
    /// `layerSize` bytes, and that every other blob it names is carried with the right
    /// digest and size: what the agent serves is then all covered by the manifest digest.
    public func validate(layerDigest: String, layerSize: UInt64) throws(ArtifactMirrorError) {
        let parsed = try Self.parseManifest(manifest, mediaType: mediaType)
        var named: [String: UInt64] = [:]
        for descriptor in [parsed.config] + parsed.layers {
            if let size = named[descriptor.digest], size != descriptor.size {
                throw .invalidArgument("the manifest names \(descriptor.digest) twice with different sizes")
            }
            named[descriptor.digest] = descriptor.size
        }
        guard named[layerDigest] == layerSize, parsed.layers.contains(where: { $0.digest == layerDigest }) else {
            throw .invalidArgument("the manifest does not name the layer \(layerDigest) of \(layerSize) bytes")
        }
        var total = 0
        for (digest, size) in named where digest != layerDigest {
            guard let data = blobs[digest] else { throw .invalidArgument("the blob \(digest) the manifest names is not carried") }
            guard UInt64(data.count) == size, Self.digest(of: data) == digest else {
                throw .invalidArgument("the carried blob \(digest) does not match its digest and size")
            }
            guard data.count <= Self.maxInlineBlobBytes else { throw .invalidArgument("the blob \(digest) is larger than \(Self.maxInlineBlobBytes) bytes") }
            total += data.count
        }
        guard total <= Self.maxInlineTotalBytes else { throw .invalidArgument("the small blobs add up to more than \(Self.maxInlineTotalBytes) bytes") }
        let carried = manifest.count + total + (signatureLayers ?? []).reduce(0) { $0 + $1.data.count }
        guard carried <= Self.maxCarriedBytes else {
            throw .invalidArgument("the manifest, small blobs and signatures add up to \(carried) bytes, more than the \(Self.maxCarriedBytes) carried per artifact")
        }
        for digest in blobs.keys where named[digest] == nil || digest == layerDigest {
            throw .invalidArgument("the blob \(digest) is carried but the manifest does not name it")
        }
        for tag in tags where !Self.isTag(tag) { throw .invalidArgument("'\(tag.prefix(80))' is not a valid OCI tag") }
        let signatures = signatureLayers ?? []
        guard signatures.count <= Self.maxSignatureLayers,
              signatures.allSatisfy({ $0.mediaType == Self.simpleSigningMediaType && $0.data.count <= Self.maxSignatureLayerBytes }) else {
            throw .invalidArgument("the publisher's signatures are not at most \(Self.maxSignatureLayers) simple-signing payloads of at most \(Self.maxSignatureLayerBytes) bytes")
        }
    }

    /// `sha256:<64 lowercase hex>`.
    public static func isSHA256Digest<S: StringProtocol>(_ text: S) -> Bool {
        guard text.hasPrefix("sha256:") else { return false }
        let hex = text.utf8.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}` (the distribution spec's tag grammar).
    public static func isTag<S: StringProtocol>(_ tag: S) -> Bool {
        let bytes = Array(tag.utf8)
        guard let first = bytes.first, bytes.count <= 128 else { return false }
        func word(_ byte: UInt8) -> Bool {
            (byte >= 97 && byte <= 122) || (byte >= 65 && byte <= 90) || (byte >= 48 && byte <= 57) || byte == 95
        }
        return word(first) && bytes.allSatisfy { word($0) || $0 == 46 || $0 == 45 }
    }

    /// The tag Helm pushes a chart version under: SemVer build metadata's `+` as `_`.
    public static func helmTag(forVersion version: String) -> String { version.replacingOccurrences(of: "+", with: "_") }
}

extension OCIPayload {
    /// Checks the stored large layer the way its kind asks: a chart's contents
    /// (`ChartArchive`), a tar+gzip layer against Flux's unpack rules, anything else by digest
    /// only. Returns the number of regular files (0 when not an archive). Throws with every
    /// reason it is refused.
    public func checkLayer(file path: String, digest: String) throws(ArtifactMirrorError) -> Int {
        if kind == .helm { return try ChartArchive(file: path, expectedDigest: digest).files }
        let mediaType = (try? Self.parseManifest(manifest, mediaType: self.mediaType))?.layers.first { $0.digest == digest }?.mediaType ?? ""
        let verifier = TarballVerifier(expectedDigest: digest)
        let report = try verifier.verify(file: path)
        if mediaType.hasSuffix("tar+gzip") {
            guard report.ok else { throw .invalidArgument("the layer breaks Flux's unpack rules: " + report.errors.prefix(5).joined(separator: "; ")) }
            return report.files
        }
        guard report.digest == digest else { throw .invalidArgument("digest mismatch: expected \(digest), file has \(report.digest)") }
        return 0
    }
}
