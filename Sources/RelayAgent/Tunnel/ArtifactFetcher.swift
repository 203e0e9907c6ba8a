import ArtifactMirror
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Wire
import Provenance

/// Why a fetch did not end in a published artifact.
enum FetchError: Error, CustomStringConvertible {
    case corruptChunk(offset: UInt64)
    case protocolViolation(String)
    case incomplete(have: UInt64, expected: UInt64)
    case digestMismatch(expected: String, actual: String)
    case rejectedByFluxRules([String])
    case tooLarge(UInt64, limit: UInt64)
    case diskFull(path: String, needed: UInt64, available: UInt64?)
    /// A Helm chart or OCI artifact whose manifest or small blobs do not hold together.
    case badManifest(String)

    var description: String {
        switch self {
        case .corruptChunk(let offset): "chunk at offset \(offset) failed its SHA-256 check"
        case .protocolViolation(let detail): "protocol violation: \(detail)"
        case .incomplete(let have, let expected): "stream ended at \(have) of \(expected) bytes"
        case .digestMismatch(let expected, let actual): "digest mismatch: expected \(expected), got \(actual)"
        case .rejectedByFluxRules(let errors): "artifact breaks Flux's unpack rules: \(errors.joined(separator: "; "))"
        case .badManifest(let detail): "the artifact's OCI manifest is refused: \(detail)"
        case .tooLarge(let size, let limit): "artifact of \(size) bytes exceeds the relay's limit of \(limit)"
        case .diskFull(let path, let needed, let available):
            "no space left for the download in \(path): \(needed) more bytes needed"
                + (available.map { ", \($0) available" } ?? "") + "; free space or give dataDir a bigger volume"
        }
    }

    /// Stable, for metrics labels, logs and the relay's timeline.
    var code: String {
        switch self {
        case .corruptChunk: "corrupt_chunk"
        case .protocolViolation: "protocol_violation"
        case .incomplete: "incomplete"
        case .digestMismatch: "digest_mismatch"
        case .rejectedByFluxRules: "flux_rules"
        case .tooLarge: "too_large"
        case .diskFull: "disk_full"
        case .badManifest: "bad_manifest"
        }
    }
}

/// Downloads one artifact over a `Fetch` stream into `<dataDir>/partial/<hex>.part`,
/// checking every chunk's offset and SHA-256 before writing it, resuming from the bytes
/// already on disk, and publishing into the store only after the whole file's size and
/// digest match and Flux's unpack rules hold. A failed whole-file check discards the bytes.
struct ArtifactFetcher: Sendable {
    let store: ArtifactStore
    let partialDirectory: URL
    /// The relay's signature: checked before any byte is fetched, stored before publishing.
    let signatureCheck: RelaySignatureCheck
    let logger: Logger
    /// Damaged-chunk retries within one fetch before giving up to the session.
    let chunkRetries = 5

    typealias Tunnel = Relay_V1_Tunnel.Client<HTTP2ClientTransport.Posix>

    func partialPath(for digest: String) -> String {
        partialDirectory.appendingPathComponent(digest.replacingOccurrences(of: "sha256:", with: "") + ".part").path
    }

    /// Fetches and publishes; returns the stored record.
    func fetch(_ artifact: Relay_V1_Artifact, limits: Relay_V1_Limits, tunnel: Tunnel,
               metadata: Metadata) async throws -> ArtifactRecord {
        if limits.maxArtifactBytes > 0, artifact.size > limits.maxArtifactBytes {
            throw FetchError.tooLarge(artifact.size, limit: limits.maxArtifactBytes)
        }
        // A chart's or OCI artifact's manifest must name exactly what is fetched and carried.
        if let payload = artifact.payload {
            do { try payload.validate(layerDigest: artifact.digest, layerSize: artifact.size) } catch {
                throw FetchError.badManifest("\(error)")
            }
        }
        // With trust: an artifact whose signature does not hold is refused before its download.
        _ = try signatureCheck.check(ArtifactRecord(artifact, files: 0), claimedManifestDigest: artifact.manifestDigest,
                                     signature: artifact.cosignSignature)
        try FileManager.default.createDirectory(at: partialDirectory, withIntermediateDirectories: true)
        let path = partialPath(for: artifact.digest)
        let file = try PartialFile(path: path, expectedSize: artifact.size)
        defer { file.close() }
        // Never start what cannot fit: a full disk would also starve the status journal.
        let needed = artifact.size - file.length + Self.headroom
        if let available = Self.availableBytes(partialDirectory.path), available < needed {
            throw FetchError.diskFull(path: partialDirectory.path, needed: needed, available: available)
        }
        if file.length > 0 {
            AgentMetrics.fetchResumes.increment()
            logger.info("resuming fetch", metadata: ["source": "\(artifact.source)", "offset": "\(file.length)",
                                                      "size": "\(artifact.size)"])
        }

        var damaged = 0
        while file.length < artifact.size {
            do {
                try await receive(artifact, into: file, tunnel: tunnel, metadata: metadata, limits: limits)
            } catch let error as FetchError {
                guard case .corruptChunk = error, damaged < chunkRetries else { throw error }
                damaged += 1
                AgentMetrics.damagedChunks.increment()
                logger.warning("damaged chunk discarded; fetching again from the last verified offset",
                               metadata: ["source": "\(artifact.source)", "offset": "\(file.length)"])
            }
        }
        try file.sync()
        let digest = file.digest()
        guard digest == artifact.digest else {
            file.close()
            unlink(path)
            throw FetchError.digestMismatch(expected: artifact.digest, actual: digest)
        }
        let files: Int
        if let payload = artifact.payload {
            do { files = try payload.checkLayer(file: path, digest: artifact.digest) } catch {
                file.close()
                unlink(path)
                throw FetchError.rejectedByFluxRules(["\(error)"])
            }
        } else {
            let report = try TarballVerifier(expectedDigest: artifact.digest).verify(file: path)
            guard report.ok else {
                file.close()
                unlink(path)
                throw FetchError.rejectedByFluxRules(report.errors)
            }
            files = report.files
        }
        let record = ArtifactRecord(artifact, files: files)
        file.close()
        // The signature of exactly the manifest served for this record, on disk before it is.
        try signatureCheck.admit(record, claimedManifestDigest: artifact.manifestDigest, signature: artifact.cosignSignature,
                             keyID: artifact.signingKeyID)
        let published = try store.publish(verifiedFile: path, record: record)
        AgentMetrics.published.increment()
        return published
    }

    /// Room kept free beyond the artifact itself (index files, the journal's next records).
    static let headroom: UInt64 = 256 << 10

    /// Bytes an unprivileged writer may still use on the filesystem holding `path`.
    static func availableBytes(_ path: String) -> UInt64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    private func receive(_ artifact: Relay_V1_Artifact, into file: PartialFile, tunnel: Tunnel, metadata: Metadata,
                         limits: Relay_V1_Limits) async throws {
        let maxChunk = limits.maxChunkBytes
        let request = Relay_V1_FetchRequest.with {
            $0.digest = artifact.digest
            $0.offset = file.length
        }
        var options = CallOptions.defaults
        if limits.maxMessageBytes > 0 { options.maxResponseMessageBytes = Int(limits.maxMessageBytes) }
        try await tunnel.fetch(request, metadata: metadata, options: options) { response in
            for try await chunk in response.messages {
                guard chunk.offset == file.length else {
                    throw FetchError.protocolViolation("chunk at \(chunk.offset), expected \(file.length)")
                }
                guard chunk.totalSize == artifact.size, chunk.offset + UInt64(chunk.data.count) <= artifact.size else {
                    throw FetchError.protocolViolation("chunk runs past the artifact's \(artifact.size) bytes")
                }
                if maxChunk > 0, chunk.data.count > Int(maxChunk) {
                    throw FetchError.protocolViolation("chunk of \(chunk.data.count) bytes exceeds the limit \(maxChunk)")
                }
                guard Data(SHA256.hash(data: chunk.data)) == chunk.chunkSha256 else {
                    throw FetchError.corruptChunk(offset: chunk.offset)
                }
                do { try file.append(chunk.data) } catch is PartialFile.OutOfSpace {
                    throw FetchError.diskFull(path: partialDirectory.path, needed: artifact.size - file.length,
                                              available: Self.availableBytes(partialDirectory.path))
                }
                AgentMetrics.fetchBytes.increment(by: chunk.data.count)
            }
        }
        if file.length < artifact.size {
            throw FetchError.incomplete(have: file.length, expected: artifact.size)
        }
    }
}

/// An append-only download file whose contents are always verified chunks, with the
/// running SHA-256 of everything in it. Reopening rehashes the existing bytes.
final class PartialFile: @unchecked Sendable {
    // Confinement: used by one fetch task at a time.
    private let handle: FileHandle
    private var hasher = SHA256()
    private(set) var length: UInt64 = 0
    private var closed = false

    init(path: String, expectedSize: UInt64) throws {
        if !FileManager.default.fileExists(atPath: path) {
            _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644])
        }
        guard let handle = FileHandle(forUpdatingAtPath: path) else {
            throw ArtifactMirrorError.storage(path: path, detail: "cannot open the partial download")
        }
        self.handle = handle
        let existing = try handle.seekToEnd()
        if existing > expectedSize {
            try handle.truncate(atOffset: 0)  // not ours: start over
        } else if existing > 0 {
            try handle.seek(toOffset: 0)
            while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty {
                hasher.update(data: data)
                length += UInt64(data.count)
            }
        }
        try handle.seek(toOffset: length)
    }

    struct OutOfSpace: Error {}

    /// Appends a verified chunk. A failed write (a full disk) is cut back off, so the file
    /// still holds whole verified chunks only and a later fetch resumes from there.
    func append(_ data: Data) throws {
        do {
            try handle.write(contentsOf: data)
        } catch {
            try? handle.truncate(atOffset: length)
            try? handle.seek(toOffset: length)
            if Self.isOutOfSpace(error) { throw OutOfSpace() }
            throw error
        }
        hasher.update(data: data)
        length += UInt64(data.count)
    }

    static func isOutOfSpace(_ error: any Error) -> Bool {
        if let cocoa = error as? CocoaError, cocoa.code == .fileWriteOutOfSpace { return true }
        if let posix = error as? POSIXError, posix.code == .ENOSPC { return true }
        let ns = error as NSError
        return ns.domain == NSPOSIXErrorDomain && ns.code == Int(ENOSPC)
    }

    func sync() throws { try handle.synchronize() }

    func digest() -> String {
        SHA256Digest(hasher.finalize()).description
    }

    func close() {
        guard !closed else { return }
        closed = true
        try? handle.close()
    }
}

extension ArtifactRecord {
    /// The store's record of an artifact the relay described.
    init(_ artifact: Relay_V1_Artifact, files: Int) {
        let now = Date()
        self.init(source: artifact.source, revision: artifact.revision, commit: artifact.commit, digest: artifact.digest,
                  size: artifact.size, files: files, skipped: [], ignoreKey: "relay", createdAt: now, lastUsedAt: now,
                  origin: artifact.origin.isEmpty ? nil : artifact.origin,
                  packagedAt: artifact.createdUnixMs > 0 ? Date(timeIntervalSince1970: Double(artifact.createdUnixMs) / 1000) : nil,
                  oci: artifact.payload)
    }
}

extension Relay_V1_Artifact {
    /// A Helm chart's or OCI artifact's manifest and small blobs; nil for a Git source.
    var payload: OCIPayload? {
        guard hasOci, let kind = OCIPayload.Kind(rawValue: oci.kind) else { return nil }
        return OCIPayload(kind: kind, manifest: oci.manifest, mediaType: oci.mediaType,
                          blobs: Dictionary(oci.blobs.map { ($0.digest, $0.data) }, uniquingKeysWith: { first, _ in first }),
                          tags: oci.tags,
                          signatureLayers: oci.signatureLayers.map { .init(mediaType: $0.mediaType, data: $0.data, annotations: $0.annotations) })
    }
}
