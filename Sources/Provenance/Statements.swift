import Foundation

/// A statement's exact JSON bytes, the key that signed them and the DER signature. The
/// bytes are what was signed: a verifier decodes them only after the signature holds.
public struct SignedEnvelope: Sendable, Codable, Equatable {
    public var statement: Data
    public var keyID: String
    public var signature: Data

    public static func sign(_ statement: Data, with key: SigningKey) -> SignedEnvelope {
        SignedEnvelope(statement: statement, keyID: key.publicKey.id, signature: key.sign(statement))
    }

    /// The key among `keys` that signed the statement, or nil.
    public func signer(in keys: TrustedKeys) -> TrustedKey? { keys.signer(of: statement, signature: signature) }

    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

/// What the relay acknowledges to an agent: everything up to `upTo` in journal `journalID`
/// is stored (the same meaning as the tunnel's StatusAck).
public struct StatusAcknowledgement: Sendable, Codable, Equatable {
    public var journalID: String
    public var upTo: UInt64
    public init(journalID: String, upTo: UInt64) {
        self.journalID = journalID
        self.upTo = upTo
    }
}

/// One artifact of a bundle's desired state, with the relay's cosign signature over the OCI
/// manifest the agent will serve for it.
public struct BundleArtifact: Sendable, Codable, Equatable {
    public var source: String
    public var revision: String
    public var digest: SHA256Digest
    public var size: UInt64
    public var commit: String
    public var origin: String
    public var createdUnixMs: Int64
    /// The Flux OCI manifest (`OCIManifest`) of this artifact.
    public var manifestDigest: SHA256Digest
    public var signature: CosignSignature
    /// Whether the artifact's bytes are in this bundle; a delta bundle leaves out what the
    /// agent already holds.
    public var included: Bool
    /// A Helm chart's or OCI artifact's manifest and small blobs (absent for Git sources,
    /// whose manifest is recomputed).
    public var oci: BundleOCIContent?

    public init(source: String, revision: String, digest: SHA256Digest, size: UInt64, commit: String, origin: String,
                createdUnixMs: Int64, manifestDigest: SHA256Digest, signature: CosignSignature, included: Bool,
                oci: BundleOCIContent? = nil) {
        self.source = source
        self.revision = revision
        self.digest = digest
        self.size = size
        self.commit = commit
        self.origin = origin
        self.createdUnixMs = createdUnixMs
        self.manifestDigest = manifestDigest
        self.signature = signature
        self.included = included
        self.oci = oci
    }

    /// The manifest the agent will serve: carried (a chart or OCI artifact) or recomputed from
    /// the description (a Git source).
    public var manifest: OCIManifest {
        if let oci { return OCIManifest(bytes: oci.manifest, mediaType: oci.mediaType) }
        return OCIManifest(revision: revision, origin: origin, digest: digest.description, size: size, createdUnixMs: createdUnixMs,
                    fallback: Date(timeIntervalSince1970: 0))
    }
}

/// A Helm chart's or OCI artifact's manifest with its small blobs, in a bundle's statement
/// (so signed with it). Mirrors the wire's `OCIContent`.
public struct BundleOCIContent: Sendable, Codable, Equatable {
    public var kind: String
    public var mediaType: String
    public var manifest: Data
    /// Digest → bytes of every blob the manifest names besides the large layer.
    public var blobs: [String: Data]
    public var tags: [String]
    /// The publisher's cosign signatures of the manifest, one image layer each.
    public var signatureLayers: [SignatureLayer]?

    /// The same layer a cosign signature image holds (same JSON fields as before).
    public typealias SignatureLayer = CosignSignature.ImageLayer

    public init(kind: String, mediaType: String, manifest: Data, blobs: [String: Data], tags: [String],
                signatureLayers: [SignatureLayer]? = nil) {
        self.kind = kind
        self.mediaType = mediaType
        self.manifest = manifest
        self.blobs = blobs
        self.tags = tags
        self.signatureLayers = signatureLayers
    }
}

/// A file of the bundle's OCI layout other than the statement and its signature.
public struct BundleFile: Sendable, Codable, Equatable {
    public var path: String
    public var size: UInt64
    public var digest: SHA256Digest
    public init(path: String, size: UInt64, digest: SHA256Digest) {
        self.path = path
        self.size = size
        self.digest = digest
    }
}

/// How the bundle's bytes are cut into part files (one part: not split).
public struct BundleParts: Sendable, Codable, Equatable {
    public var count: Int
    /// Bytes in every part but the last.
    public var partBytes: UInt64
    /// Bytes of the whole tar (all parts).
    public var totalBytes: UInt64
    public init(count: Int, partBytes: UInt64, totalBytes: UInt64) {
        self.count = count
        self.partBytes = partBytes
        self.totalBytes = totalBytes
    }
}

/// The relay's signed statement of one bundle: for one agent (audience), one snapshot of its
/// whole desired state (no mix-and-match), a sequence that only grows (no rollback), an
/// optional expiry (no indefinite freeze), every file with its size and digest (no endless or
/// unlisted data), and the status the relay has stored from the agent (the way back).
public struct BundleStatement: Sendable, Codable, Equatable {
    public static let currentType = "relay.bundle.v1"
    public var type: String = Self.currentType
    public var agent: String
    public var sequence: UInt64
    public var createdUnixMs: Int64
    public var expiresUnixMs: Int64?
    /// Present when the relay has stored status from this agent.
    public var statusAck: StatusAcknowledgement?
    public var artifacts: [BundleArtifact]
    public var files: [BundleFile]
    public var parts: BundleParts
    /// The status bundle a delta was computed against (its digest), nil for a full bundle.
    public var since: SHA256Digest?

    public init(agent: String, sequence: UInt64, createdUnixMs: Int64, expiresUnixMs: Int64?, statusAck: StatusAcknowledgement?,
                artifacts: [BundleArtifact], files: [BundleFile], parts: BundleParts, since: SHA256Digest?) {
        self.agent = agent
        self.sequence = sequence
        self.createdUnixMs = createdUnixMs
        self.expiresUnixMs = expiresUnixMs
        self.statusAck = statusAck
        self.artifacts = artifacts
        self.files = files
        self.parts = parts
        self.since = since
    }

    /// The statement's exact bytes (sorted keys: the same statement always encodes the same).
    public func encoded() -> Data { (try? SignedEnvelope.encoder.encode(self)) ?? Data() }
}

/// What an agent held when it wrote a status bundle.
public struct HeldArtifact: Sendable, Codable, Equatable, Hashable {
    public var source: String
    public var revision: String
    public var digest: SHA256Digest
    public init(source: String, revision: String, digest: SHA256Digest) {
        self.source = source
        self.revision = revision
        self.digest = digest
    }
}

/// The agent's signed statement of one status bundle: its journal entries not yet
/// acknowledged (a serialized `relay.v1.StatusBatch`), what it holds, and the last bundle it
/// imported.
public struct StatusStatement: Sendable, Codable, Equatable {
    public static let currentType = "relay.status-bundle.v1"
    public var type: String = Self.currentType
    public var agent: String
    public var createdUnixMs: Int64
    public var journalID: String
    /// `relay.v1.StatusBatch` in protobuf binary: the entries exactly as the tunnel carries them.
    public var statusBatch: Data
    public var entryCount: Int
    public var inventory: [HeldArtifact]
    /// The sequence of the last relay bundle this agent imported (0: none).
    public var lastBundleSequence: UInt64

    public init(agent: String, createdUnixMs: Int64, journalID: String, statusBatch: Data, entryCount: Int,
                inventory: [HeldArtifact], lastBundleSequence: UInt64) {
        self.agent = agent
        self.createdUnixMs = createdUnixMs
        self.journalID = journalID
        self.statusBatch = statusBatch
        self.entryCount = entryCount
        self.inventory = inventory
        self.lastBundleSequence = lastBundleSequence
    }

    public func encoded() -> Data { (try? SignedEnvelope.encoder.encode(self)) ?? Data() }
}
