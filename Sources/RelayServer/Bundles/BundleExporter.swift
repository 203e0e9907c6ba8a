import ArtifactMirror
import Foundation
import Provenance
import RelayShared

/// Why no bundle was written. `code` is stable (JSON output, exit codes, tests).
public enum BundleExportError: Error, CustomStringConvertible {
    case unknownAgent(String)
    case noGrants(String)
    case notPackaged(source: String)
    case artifactMissing(source: String, digest: String, path: String)
    case noTrustedAgentKey(String)
    case statusBundle(String)
    case statusBundleSignature(agent: String)
    case statusBundleAgent(expected: String, found: String)
    case maxSizeTooSmall(UInt64)
    case io(String)

    public var description: String {
        switch self {
        case .unknownAgent(let name):
            "no agent '\(name)' at this relay: add it to relay.yaml `agents` or create it with `relay-server agents create`"
        case .noGrants(let name):
            "agent '\(name)' is granted no sources: list them under its `sources` in relay.yaml (or `relay-server agents create … --source`)"
        case .notPackaged(let source):
            "source '\(source)' was never packaged: start relay-server (it packages every source on start) and export again once "
                + "/api/v1/sources/\(source)/revisions lists a revision"
        case .artifactMissing(let source, let digest, let path):
            "the newest artifact of '\(source)' (\(digest)) is not in the relay's store (\(path)): let the running relay package it again (webhook or restart)"
        case .noTrustedAgentKey(let agent):
            "--since needs the agent's public key: run `relay-agent keys public` on the agent, then `relay-server agents trust \(agent) agent.pub`"
        case .statusBundle(let detail): "--since: \(detail)"
        case .statusBundleSignature(let agent):
            "--since: the status bundle is not signed by a key trusted for '\(agent)' (relay-server agents trust \(agent) --list); it was altered or comes from elsewhere"
        case .statusBundleAgent(let expected, let found):
            "--since: the status bundle was written by agent '\(found)', not '\(expected)'"
        case .maxSizeTooSmall(let size):
            "--max-size \(size) is too small: parts must hold at least \(BundleLayout.minimumPartBytes) bytes (the signed statement must fit in the first part)"
        case .io(let detail): detail
        }
    }

    public var code: String {
        switch self {
        case .unknownAgent: "unknown_agent"
        case .noGrants: "no_grants"
        case .notPackaged: "not_packaged"
        case .artifactMissing: "artifact_missing"
        case .noTrustedAgentKey: "no_trusted_key"
        case .statusBundle: "status_bundle_invalid"
        case .statusBundleSignature: "bad_signature"
        case .statusBundleAgent: "wrong_agent"
        case .maxSizeTooSmall: "max_size_too_small"
        case .io: "io"
        }
    }
}

/// What one export wrote (printed as JSON by `relay-server bundle export`).
public struct BundleExportSummary: Sendable, Codable, Equatable {
    public var agent: String
    public var files: [String]
    public var sequence: UInt64
    public var kind: String
    public var bytes: UInt64
    public var parts: Int
    public var included: [String]
    public var omitted: [String]
    public var expires: String?
    public var statusAck: StatusAcknowledgement?
    public var keyID: String
}

/// Writes a relay bundle for one agent: every granted source's newest artifact with its OCI
/// manifest and the relay's cosign signature, as an OCI image layout in a tar (skopeo reads
/// it as `oci-archive:FILE:<source>`), with a signed statement that names the agent, carries
/// a sequence that only grows, the whole set of artifacts, an optional expiry, the status
/// acknowledgement, and the size and digest of every file.
public struct BundleExporter: Sendable {
    public struct Request: Sendable {
        public var agent: String
        public var output: String
        /// A status bundle of the agent: what it holds is left out.
        public var since: String?
        public var maxSize: UInt64?
        public var expiresIn: TimeInterval?
        public init(agent: String, output: String, since: String?, maxSize: UInt64?, expiresIn: TimeInterval?) {
            self.agent = agent
            self.output = output
            self.since = since
            self.maxSize = maxSize
            self.expiresIn = expiresIn
        }
    }

    let config: ResolvedServerConfig
    let registry: Registry
    let signer: RelaySigner
    let store: ArtifactStore
    let progress: @Sendable (String) -> Void

    public init(config: ResolvedServerConfig, registry: Registry, signer: RelaySigner,
                progress: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.config = config
        self.registry = registry
        self.signer = signer
        store = try ArtifactStore(root: config.dataDirectory.appendingPathComponent("store"), retention: 10)
        self.progress = progress
    }

    public func export(_ request: Request) async throws -> BundleExportSummary {
        if let maxSize = request.maxSize, maxSize < BundleLayout.minimumPartBytes { throw BundleExportError.maxSizeTooSmall(maxSize) }
        let agent = request.agent
        let sources = try await grants(agent)
        let latest = try await registry.latestArtifacts()
        var packaged: [PackagedArtifact] = []
        let governed = Set(RolloutController.governed(config).map(\.name))
        for source in sources {
            guard var artifact = latest[source] else { throw BundleExportError.notPackaged(source: source) }
            // A source under rollout rules (waves, freezes): what the relay gives this agent
            // now, and nothing while it has been given nothing.
            if governed.contains(source) {
                guard let digest = try await registry.rolloutAssignments(source: source)[agent] else {
                    progress("\(source): held for \(agent) by its rollout rules; not in this bundle")
                    continue
                }
                if digest != artifact.digest, let assigned = try await registry.artifact(digest: digest, amongSources: [source]) {
                    artifact = assigned
                }
            }
            packaged.append(artifact)
        }
        var held = Set<String>()
        var since: SHA256Digest?
        if let path = request.since {
            let (statement, digest) = try await statusBundle(path, agent: agent)
            held = Set(statement.inventory.map(\.digest.description))
            since = digest
        }

        // The artifacts, their manifests and signatures, and every blob of the layout.
        var artifacts: [BundleArtifact] = []
        var blobs: [(digest: SHA256Digest, entry: TarEntry)] = []
        var seen = Set<SHA256Digest>()
        func addBlob(_ data: Data) {
            let digest = SHA256Digest(of: data)
            guard seen.insert(digest).inserted else { return }
            blobs.append((digest, TarEntry(name: BundleLayout.blobPath(digest), data: data)))
        }
        var index: [BundleLayout.IndexEntry] = []
        addBlob(OCIManifest.configBytes)
        for artifact in packaged {
            guard let digest = SHA256Digest(artifact.digest) else { throw BundleExportError.io("registry holds an invalid digest for '\(artifact.source)'") }
            let manifest = RelaySigner.manifest(for: artifact)
            let signature = signer.signature(for: manifest, source: artifact.source)
            let include = !held.contains(artifact.digest)
            let described = BundleArtifact(
                source: artifact.source, revision: artifact.revision, digest: digest, size: artifact.size, commit: artifact.commit,
                origin: artifact.origin.isEmpty ? artifact.source : artifact.origin,
                createdUnixMs: RelaySigner.wireMilliseconds(artifact.createdAt), manifestDigest: SHA256Digest(manifest.digest)!,
                signature: signature, included: include,
                oci: artifact.oci.map { BundleOCIContent(kind: $0.kind.rawValue, mediaType: $0.mediaType, manifest: $0.manifest,
                                                         blobs: $0.blobs, tags: $0.tags,
                                                         signatureLayers: $0.signatureLayers?.map { .init(mediaType: $0.mediaType, data: $0.data, annotations: $0.annotations) }) })
            // The agent recomputes the manifest from the statement: it must be the one signed.
            guard described.manifest == manifest else { throw BundleExportError.io("the manifest of '\(artifact.source)' cannot be recomputed from its description") }
            artifacts.append(described)
            addBlob(manifest.bytes)
            for digest in (artifact.oci?.blobs.keys).map(Array.init)?.sorted() ?? [] { addBlob(artifact.oci!.blobs[digest]!) }
            if include, seen.insert(digest).inserted {
                let path = store.path(forDigest: artifact.digest).path
                guard FileSystemCheck.size(path) == artifact.size else {
                    throw BundleExportError.artifactMissing(source: artifact.source, digest: artifact.digest, path: path)
                }
                blobs.append((digest, TarEntry(name: BundleLayout.blobPath(digest), size: artifact.size, content: .file(path: path))))
            }
            addBlob(signature.configBytes)
            addBlob(signature.payload)
            addBlob(signature.manifestBytes)
            index.append(.init(digest: SHA256Digest(manifest.digest)!, size: manifest.bytes.count,
                               refName: BundleLayout.isValidRefName(artifact.source) ? artifact.source : "source-\(artifacts.count)"))
            index.append(.init(digest: SHA256Digest(signature.manifestDigest)!, size: signature.manifestBytes.count,
                               refName: CosignSignature.tag(forManifest: manifest.digest)))
        }
        let indexBytes = BundleLayout.index(index)
        var files = [BundleFile(path: BundleLayout.ociLayoutPath, size: UInt64(BundleLayout.ociLayoutBytes.count),
                                digest: SHA256Digest(of: BundleLayout.ociLayoutBytes)),
                     BundleFile(path: BundleLayout.indexPath, size: UInt64(indexBytes.count), digest: SHA256Digest(of: indexBytes))]
        for blob in blobs { files.append(BundleFile(path: blob.entry.name, size: blob.entry.size, digest: blob.digest)) }

        let now = Date()
        let expires = request.expiresIn.map { now.addingTimeInterval($0) }
        let kind = request.since == nil ? "full" : "delta"
        let sequence = try await registry.reserveBundleSequence(agent: agent, createdAt: now, expiresAt: expires, kind: kind)
        let ack = try await registry.statusAcknowledgement(agent: agent)
        var statement = BundleStatement(agent: agent, sequence: sequence, createdUnixMs: RelaySigner.wireMilliseconds(now),
                                        expiresUnixMs: expires.map(RelaySigner.wireMilliseconds), statusAck: ack,
                                        artifacts: artifacts, files: files, parts: BundleParts(count: 1, partBytes: 0, totalBytes: 0),
                                        since: since)
        // The statement's size depends on the part count it states: iterate until stable.
        let signatureSlot: UInt64 = 512  // the signature file (~150 bytes) pads to one block
        for _ in 0..<8 {
            let sizes = [UInt64(BundleLayout.ociLayoutBytes.count), UInt64(statement.encoded().count), signatureSlot,
                         UInt64(indexBytes.count)] + blobs.map(\.entry.size)
            let total = TarFormat.archiveSize(entrySizes: sizes)
            let partBytes = request.maxSize.map { min($0, total) } ?? total
            let count = Int((total + partBytes - 1) / partBytes)
            let parts = BundleParts(count: count, partBytes: count > 1 ? partBytes : total, totalBytes: total)
            if parts == statement.parts { break }
            statement.parts = parts
        }
        let statementBytes = statement.encoded()
        if statement.parts.count > 1 {
            let head = TarFormat.archiveSize(entrySizes: [UInt64(BundleLayout.ociLayoutBytes.count), UInt64(statementBytes.count), signatureSlot])
            guard head <= statement.parts.partBytes else {
                throw BundleExportError.io("the signed statement (\(statementBytes.count) bytes) does not fit in one part of \(statement.parts.partBytes) bytes: raise --max-size")
            }
        }
        let signatureFile = BundleLayout.Signature(keyID: signer.key.publicKey.id,
                                                   signature: signer.key.sign(statementBytes).base64EncodedString()).encoded()
        guard signatureFile.count <= signatureSlot else { throw BundleExportError.io("statement signature larger than expected") }

        let writer = PartedTarWriter(output: request.output, parts: statement.parts)
        let total = statement.parts.totalBytes
        let report = progress
        writer.progress = { written in report("bundle: \(written >> 20) of \(total >> 20) MiB written") }
        var entries = [TarEntry(name: BundleLayout.ociLayoutPath, data: BundleLayout.ociLayoutBytes),
                       TarEntry(name: BundleLayout.statementPath, data: statementBytes),
                       TarEntry(name: BundleLayout.signaturePath, data: signatureFile),
                       TarEntry(name: BundleLayout.indexPath, data: indexBytes)]
        entries += blobs.map(\.entry)
        do {
            try writer.write(entries)
            try writer.finish()
        } catch {
            throw BundleExportError.io("cannot write the bundle: \(error)")
        }
        guard writer.written == total else { throw BundleExportError.io("wrote \(writer.written) bytes, the statement says \(total)") }
        try await registry.completeBundleExport(agent: agent, sequence: sequence, bytes: total, parts: statement.parts.count)
        return BundleExportSummary(agent: agent, files: writer.paths, sequence: sequence, kind: kind, bytes: total,
                                   parts: statement.parts.count,
                                   included: artifacts.filter(\.included).map { "\($0.source)@\($0.revision)" },
                                   omitted: artifacts.filter { !$0.included }.map { "\($0.source)@\($0.revision)" },
                                   expires: expires.map { RFC3339.format($0) }, statusAck: ack, keyID: signer.key.publicKey.id)
    }

    /// The sources `agent` is granted: relay.yaml's for a configured agent, else the registry's.
    func grants(_ agent: String) async throws -> [String] {
        let sources: [String]
        if let configured = config.agents.first(where: { $0.name == agent }) {
            sources = configured.sources
        } else if try await registry.agentExists(agent) {
            sources = try await registry.grantedSources(agent: agent)
        } else {
            throw BundleExportError.unknownAgent(agent)
        }
        guard !sources.isEmpty else { throw BundleExportError.noGrants(agent) }
        return Array(Set(sources)).sorted()
    }

    /// The agent's status bundle, verified under its trusted keys; its statement and digest.
    func statusBundle(_ path: String, agent: String) async throws -> (StatusStatement, SHA256Digest) {
        let envelope: SignedEnvelope
        do { envelope = try StatusBundleFile.read(path: path) } catch { throw BundleExportError.statusBundle("\(error)") }
        let keys = try await registry.agentPublicKeys(agent)
        guard !keys.isEmpty else { throw BundleExportError.noTrustedAgentKey(agent) }
        guard envelope.signer(in: TrustedKeys(keys)) != nil else { throw BundleExportError.statusBundleSignature(agent: agent) }
        let statement: StatusStatement
        do { statement = try JSONDecoder().decode(StatusStatement.self, from: envelope.statement) } catch {
            throw BundleExportError.statusBundle("its statement is unreadable: \(error)")
        }
        guard statement.agent == agent else { throw BundleExportError.statusBundleAgent(expected: agent, found: statement.agent) }
        return (statement, SHA256Digest(of: envelope.statement))
    }
}

extension FileSystemCheck {
    static func size(_ path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt64(info.st_size)
    }
}
