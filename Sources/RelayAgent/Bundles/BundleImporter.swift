import ArtifactMirror
import Crypto
import Foundation
import Logging
import Metrics
import Provenance
import Wire

/// Why a bundle was refused. Nothing was published; `code` is stable (result files, metrics,
/// exit codes, the status entry sent to the relay).
public enum BundleRefusal: Error, CustomStringConvertible, Equatable {
    case trustRequired
    case nameRequired
    case malformed(String)
    case missingPart(String)
    case badPart(path: String, size: UInt64, expected: UInt64)
    case badSignature(String)
    case wrongAgent(bundle: String, agent: String)
    case replayed(sequence: UInt64, last: UInt64)
    case expired(expiredAt: String)
    case digestMismatch(String)
    case unlistedFile(String)
    case missingFile(String)
    case signature(source: String, SignatureFailure)
    case fluxRules(source: String, [String])
    case notHeld(source: String, digest: String)
    case diskFull(path: String, needed: UInt64, available: UInt64)
    case io(String)
    case stateUnreadable(String)

    public var description: String {
        switch self {
        case .trustRequired:
            "importing bundles needs the relay's public key: set trust.relayPublicKeys in agent.yaml (relay-server keys public on the relay)"
        case .nameRequired: "agent.yaml has no name: a bundle is made for one agent name (set `name`)"
        case .malformed(let detail): "not a relay bundle: \(detail)"
        case .missingPart(let path): "part \(path) is missing: copy every part of the bundle (FILE.001, FILE.002, …) next to each other and import again"
        case .badPart(let path, let size, let expected): "part \(path) has \(size) bytes, the signed statement says \(expected): it was cut short or altered; copy it again"
        case .badSignature(let detail): "the bundle's statement is not signed by a trusted relay key: \(detail)"
        case .wrongAgent(let bundle, let agent): "the bundle is for agent '\(bundle)', this agent is '\(agent)': export one for '\(agent)' (relay-server bundle export --agent \(agent))"
        case .replayed(let sequence, let last):
            "bundle sequence \(sequence) is not newer than the last imported (\(last)): an old or replayed bundle; export a new one"
        case .expired(let at): "the bundle expired at \(at): export a fresh one, or import with --allow-expired (recorded)"
        case .digestMismatch(let detail): "\(detail): the bundle was altered or damaged in transit"
        case .unlistedFile(let path): "\(path) is in the bundle but not in its signed statement: the bundle was altered"
        case .missingFile(let path): "\(path) is listed in the signed statement but not in the bundle: it was cut short or altered"
        case .signature(let source, let failure): "the relay's signature of '\(source)' does not hold: \(failure)"
        case .fluxRules(let source, let errors): "the artifact of '\(source)' breaks Flux's unpack rules: \(errors.joined(separator: "; "))"
        case .notHeld(let source, let digest):
            "the bundle leaves out '\(source)' (\(digest)) as held, but this agent does not hold it: export a full bundle (--full), or --since a current status bundle"
        case .diskFull(let path, let needed, let available):
            "no space for the bundle's artifacts in \(path): \(needed) bytes needed, \(available) available; free space or give dataDir a bigger volume"
        case .io(let detail): detail
        case .stateUnreadable(let detail): detail
        }
    }

    public var code: String {
        switch self {
        case .trustRequired: "trust_required"
        case .nameRequired: "name_required"
        case .malformed: "malformed"
        case .missingPart: "missing_part"
        case .badPart: "bad_part"
        case .badSignature: "bad_signature"
        case .wrongAgent: "wrong_agent"
        case .replayed: "replayed"
        case .expired: "expired"
        case .digestMismatch: "digest_mismatch"
        case .unlistedFile: "unlisted_file"
        case .missingFile: "missing_file"
        case .signature(_, let failure): failure.code
        case .fluxRules: "flux_rules"
        case .notHeld: "not_held"
        case .diskFull: "disk_full"
        case .io: "io"
        case .stateUnreadable: "state_unreadable"
        }
    }
}

/// What an import published.
public struct BundleImportSummary: Sendable, Codable, Equatable {
    public var ok = true
    public var agent: String
    public var sequence: UInt64
    /// source@revision of every artifact made current (carried or already held).
    public var published: [String]
    public var carried: Int
    public var held: Int
    public var expiredAccepted: Bool
    /// The journal sequence the relay acknowledged and the agent trimmed to (0: none applied).
    public var acknowledged: UInt64
}

/// Imports a relay bundle: verifies everything (parts, the statement's signature, audience,
/// sequence, expiry, every file's size and digest, every manifest and cosign signature,
/// Flux's unpack rules) while streaming it into temporary files, and only then publishes every
/// artifact as a fetched one would be, records the sequence, and applies the acknowledgement.
public struct BundleImporter: Sendable {
    let name: String
    let keys: TrustedKeys
    let dataDirectory: URL
    let store: ArtifactStore
    let signatureCheck: RelaySignatureCheck
    let journal: StatusJournal?
    let announce: @Sendable (ArtifactRecord) -> Void
    let logger: Logger

    /// Files small enough to keep in memory while checking (manifests, configs, index).
    static let smallFileBytes: UInt64 = 4 << 20

    public init(config: ResolvedAgentConfig, store: ArtifactStore, signatureCheck: RelaySignatureCheck, journal: StatusJournal?,
                logger: Logger, announce: @escaping @Sendable (ArtifactRecord) -> Void) throws(BundleRefusal) {
        guard let keys = config.trustedRelayKeys else { throw .trustRequired }
        guard let name = config.name, !name.isEmpty else { throw .nameRequired }
        self.name = name
        self.keys = keys
        dataDirectory = config.dataDirectory
        self.store = store
        self.signatureCheck = signatureCheck
        self.journal = journal
        self.logger = logger
        self.announce = announce
    }

    /// Imports the bundle in `arguments` (the file, or its parts); refusals are counted and journaled.
    public func run(_ arguments: [String], allowExpired: Bool = false, now: Date = Date()) throws(BundleRefusal) -> BundleImportSummary {
        do {
            let summary = try importBundle(arguments, allowExpired: allowExpired, now: now)
            Counter(label: "relay_agent_bundles_imported_total").increment()
            return summary
        } catch {
            Counter(label: "relay_agent_bundles_rejected_total", dimensions: [("reason", error.code)]).increment()
            logger.error("bundle refused", metadata: ["code": "\(error.code)", "error": "\(error)"])
            journalEvent(severity: "error", reason: "BundleRefused", name: "bundle", message: "bundle refused [\(error.code)]: \(error)",
                         metadata: ["code": error.code])
            throw error
        }
    }

    private func importBundle(_ arguments: [String], allowExpired: Bool, now: Date) throws(BundleRefusal) -> BundleImportSummary {
        guard let argument = arguments.first else { throw .malformed("no bundle file given") }
        let (base, first) = try Self.locate(argument)
        // The statement (in the first part): who it is for, which parts, which files.
        let head = try Self.readHead(PartedTarReader(paths: [first]))
        let statement = try verifyStatement(head, allowExpired: allowExpired, now: now)
        let parts = PartedTarWriter.partPaths(output: base, count: statement.parts.count)
        if statement.parts.count > 1, first != parts[0] { throw .malformed("\(first) is not part 1 of a \(statement.parts.count)-part bundle") }
        for (index, path) in parts.enumerated() {
            guard let size = Self.fileSize(path) else { throw .missingPart(path) }
            let expected = index < parts.count - 1 ? statement.parts.partBytes
                : statement.parts.totalBytes - statement.parts.partBytes * UInt64(parts.count - 1)
            guard size == expected else { throw .badPart(path: path, size: size, expected: expected) }
        }

        let temporary = dataDirectory.appendingPathComponent("bundles/tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do { try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true) } catch {
            throw .io("cannot create \(temporary.path): \(error)")
        }
        defer { try? FileManager.default.removeItem(at: temporary) }
        // Never start what cannot fit: a full disk would also starve the status journal.
        let needed = statement.artifacts.filter(\.included).reduce(ArtifactFetcher.headroom) { $0 + $1.size }
        if let available = ArtifactFetcher.availableBytes(temporary.path), available < needed {
            throw .diskFull(path: temporary.path, needed: needed, available: available)
        }
        let layers = try readFiles(parts: parts, head: head, statement: statement, temporary: temporary)
        let records = try verifyArtifacts(statement, layers: layers, now: now)

        // Everything holds. The sequence is spent first: if publishing fails midway, neither
        // this bundle nor an older one can be imported again (export a new one).
        do { try BundleState.save(dataDirectory: dataDirectory, lastSequence: statement.sequence, importedAt: now) } catch {
            throw .io("cannot record the import in \(BundleState.url(dataDirectory: dataDirectory).path): \(error)")
        }
        var published: [String] = []
        for (artifact, record) in records {
            do {
                try signatureCheck.admit(record, claimedManifestDigest: artifact.manifestDigest.description, signature: artifact.signature,
                                         keyID: nil)
                let stored: ArtifactRecord?
                if let layer = layers[artifact.digest], !store.holdsFile(of: record) {
                    stored = try store.publish(verifiedFile: layer, record: record)
                } else {
                    stored = try store.recordExisting(record)
                }
                guard let stored else { throw BundleRefusal.notHeld(source: artifact.source, digest: artifact.digest.description) }
                announce(stored)
                published.append("\(artifact.source)@\(artifact.revision)")
            } catch let refusal as BundleRefusal {
                throw refusal
            } catch {
                throw .io("publishing '\(artifact.source)': \(error)")
            }
        }
        var acknowledged: UInt64 = 0
        if let ack = statement.statusAck, let journal, ack.journalID == journal.journalID {
            do {
                try journal.acknowledge(upTo: ack.upTo)
                acknowledged = journal.acknowledgedSequence
            } catch {
                logger.warning("cannot apply the relay's acknowledgement", metadata: ["error": "\(error)"])
            }
        }
        let expired = statement.expiresUnixMs.map { $0 < Int64(now.timeIntervalSince1970 * 1000) } ?? false
        if expired {
            journalEvent(severity: "warning", reason: "BundleExpiredAccepted", name: "bundle-\(statement.sequence)",
                         message: "bundle \(statement.sequence) had expired at \(Self.time(statement.expiresUnixMs ?? 0)); imported with --allow-expired",
                         metadata: ["sequence": "\(statement.sequence)"])
        }
        journalEvent(severity: "info", reason: "BundleImported", name: "bundle-\(statement.sequence)",
                     message: "bundle \(statement.sequence) imported: \(published.joined(separator: ", "))",
                     metadata: ["sequence": "\(statement.sequence)"])
        logger.notice("bundle imported", metadata: ["sequence": "\(statement.sequence)", "artifacts": "\(published.count)"])
        return BundleImportSummary(agent: statement.agent, sequence: statement.sequence, published: published,
                                   carried: statement.artifacts.filter(\.included).count,
                                   held: statement.artifacts.filter { !$0.included }.count, expiredAccepted: expired,
                                   acknowledged: acknowledged)
    }

    // MARK: Reading

    struct Head {
        var layout: Data
        var statement: Data
        var signature: Data
    }

    /// The bundle's base name and its first file: FILE, or FILE.001 for a split bundle.
    static func locate(_ argument: String) throws(BundleRefusal) -> (base: String, first: String) {
        let suffix = argument.suffix(4)
        if suffix.first == ".", suffix.dropFirst().allSatisfy(\.isNumber) {
            let base = String(argument.dropLast(4))
            let first = base + ".001"
            guard fileSize(first) != nil else { throw .missingPart(first) }
            return (base, first)
        }
        if fileSize(argument) != nil { return (argument, argument) }
        if fileSize(argument + ".001") != nil { return (argument, argument + ".001") }
        throw .missingPart(argument)
    }

    static func fileSize(_ path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return UInt64(info.st_size)
    }

    /// `oci-layout`, the statement and its signature: the first three entries, in that order.
    static func readHead(_ reader: PartedTarReader) throws(BundleRefusal) -> Head {
        func entry(_ name: String, limit: UInt64) throws(BundleRefusal) -> Data {
            do {
                guard let next = try reader.nextEntry() else { throw BundleRefusal.malformed("it ends before \(name)") }
                guard next.name == name else { throw BundleRefusal.malformed("expected \(name), found \(next.name.prefix(120))") }
                return try reader.readData(size: next.size, limit: limit)
            } catch let refusal as BundleRefusal {
                throw refusal
            } catch {
                throw .malformed("reading \(name): \(error) (a split bundle must hold its statement in part 1)")
            }
        }
        return Head(layout: try entry(BundleLayout.ociLayoutPath, limit: 4096),
                    statement: try entry(BundleLayout.statementPath, limit: BundleLayout.maxStatementBytes),
                    signature: try entry(BundleLayout.signaturePath, limit: 64 << 10))
    }

    /// Signature, audience, type, sequence and expiry of the statement.
    func verifyStatement(_ head: Head, allowExpired: Bool, now: Date) throws(BundleRefusal) -> BundleStatement {
        guard let signature = try? JSONDecoder().decode(BundleLayout.Signature.self, from: head.signature),
              let raw = Data(base64Encoded: signature.signature) else {
            throw .badSignature("\(BundleLayout.signaturePath) is not {keyID, signature}")
        }
        guard keys.signer(of: head.statement, signature: raw) != nil else {
            throw .badSignature("signed by key \(signature.keyID.prefix(80)), trusted: \(keys.ids); or the statement was altered")
        }
        let statement: BundleStatement
        do { statement = try JSONDecoder().decode(BundleStatement.self, from: head.statement) } catch {
            throw .malformed("the signed statement is unreadable: \(error)")
        }
        guard statement.type == BundleStatement.currentType else { throw .malformed("statement type '\(statement.type.prefix(80))', expected \(BundleStatement.currentType)") }
        guard statement.agent == name else { throw .wrongAgent(bundle: statement.agent, agent: name) }
        let last: UInt64
        do { last = try BundleState.loadForImport(dataDirectory: dataDirectory).lastSequence } catch {
            throw .stateUnreadable("\(BundleState.url(dataDirectory: dataDirectory).path) is unreadable (\(error)); it guards against replayed bundles: "
                      + "restore it, or write {\"lastSequence\": N, \"lastImportedUnixMs\": 0} with the last sequence imported")
        }
        guard statement.sequence > last else { throw .replayed(sequence: statement.sequence, last: last) }
        if let expires = statement.expiresUnixMs, expires < Int64(now.timeIntervalSince1970 * 1000), !allowExpired {
            throw .expired(expiredAt: Self.time(expires))
        }
        let (before, overflow) = statement.parts.partBytes.multipliedReportingOverflow(by: UInt64(max(0, statement.parts.count - 1)))
        guard statement.parts.count >= 1, statement.parts.count <= 9999,
              statement.parts.count == 1 || statement.parts.partBytes > 0,
              !overflow, statement.parts.totalBytes >= before else {
            throw .malformed("the statement's parts are inconsistent")
        }
        return statement
    }

    /// Reads the whole bundle: every entry listed, of its listed size and digest, none
    /// missing; the layers of carried artifacts go to files in `temporary`. Returns them by digest.
    func readFiles(parts: [String], head: Head, statement: BundleStatement, temporary: URL) throws(BundleRefusal) -> [Provenance.SHA256Digest: String] {
        var listed: [String: BundleFile] = [:]
        for file in statement.files {
            guard listed.updateValue(file, forKey: file.path) == nil else { throw .malformed("\(file.path) is listed twice") }
        }
        let carried = Set(statement.artifacts.filter(\.included).map { BundleLayout.blobPath($0.digest) })
        let reader = PartedTarReader(paths: parts)
        let again = try Self.readHead(reader)
        guard again.statement == head.statement, again.signature == head.signature else {
            throw .digestMismatch("the statement in the parts differs from the one read first")
        }
        guard let layout = listed[BundleLayout.ociLayoutPath], UInt64(again.layout.count) == layout.size,
              Provenance.SHA256Digest(of: again.layout) == layout.digest else {
            throw .digestMismatch("\(BundleLayout.ociLayoutPath) does not match its listed digest")
        }
        var seen: Set<String> = [BundleLayout.ociLayoutPath]
        var layers: [Provenance.SHA256Digest: String] = [:]
        while true {
            let entry: (name: String, size: UInt64)?
            do { entry = try reader.nextEntry() } catch { throw .malformed("\(error)") }
            guard let entry else { break }
            guard let file = listed[entry.name] else { throw .unlistedFile(String(entry.name.prefix(200))) }
            guard seen.insert(entry.name).inserted else { throw .unlistedFile("\(entry.name) (a second copy)") }
            guard entry.size == file.size else { throw .digestMismatch("\(entry.name) has \(entry.size) bytes, listed \(file.size)") }
            var hasher = SHA256()
            if carried.contains(entry.name) {
                let path = temporary.appendingPathComponent(file.digest.hex).path
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                guard fd >= 0 else { throw .io("cannot write \(path): \(String(cString: strerror(errno)))") }
                do {
                    defer { close(fd) }
                    try reader.readContent(size: entry.size) { chunk in
                        hasher.update(bufferPointer: chunk)
                        var offset = 0
                        while offset < chunk.count {
                            let count = write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                            guard count > 0 else { throw BundleRefusal.io("cannot write \(path): \(String(cString: strerror(errno)))") }
                            offset += count
                        }
                    }
                    guard fsync(fd) == 0 else { throw BundleRefusal.io("cannot sync \(path): \(String(cString: strerror(errno)))") }
                } catch let refusal as BundleRefusal {
                    throw refusal
                } catch {
                    throw .malformed("\(error)")
                }
                layers[file.digest] = path
            } else {
                do { try reader.readContent(size: entry.size) { hasher.update(bufferPointer: $0) } } catch {
                    throw .malformed("\(error)")
                }
            }
            guard Provenance.SHA256Digest(hasher.finalize()) == file.digest else {
                throw .digestMismatch("\(entry.name) does not match its listed digest \(file.digest)")
            }
        }
        if let missing = statement.files.first(where: { !seen.contains($0.path) }) { throw .missingFile(missing.path) }
        // The rest is the end-of-archive zeros, up to the size the statement signs.
        let total: UInt64
        do { total = try reader.readZeroTail() } catch { throw .malformed("\(error)") }
        guard total == statement.parts.totalBytes else { throw .malformed("\(total) bytes, the statement says \(statement.parts.totalBytes)") }
        return layers
    }

    /// Every artifact: its manifest recomputed and listed, its cosign signature, its layer's
    /// Flux rules (carried) or presence here (left out). Returns the records to publish.
    func verifyArtifacts(_ statement: BundleStatement, layers: [Provenance.SHA256Digest: String], now: Date) throws(BundleRefusal) -> [(BundleArtifact, ArtifactRecord)] {
        let listed = Set(statement.files.map(\.path))
        let held: [ArtifactRecord]
        do { held = try store.allRecords().filter { store.holdsFile(of: $0) } } catch { throw .io("cannot read the store: \(error)") }
        var sources = Set<String>()
        var result: [(BundleArtifact, ArtifactRecord)] = []
        for artifact in statement.artifacts {
            guard sources.insert(artifact.source).inserted else { throw .malformed("'\(artifact.source)' appears twice") }
            let manifest = artifact.manifest
            guard manifest.digest == artifact.manifestDigest.description else {
                throw .digestMismatch("the manifest of '\(artifact.source)' recomputes to \(manifest.digest), the statement says \(artifact.manifestDigest)")
            }
            guard listed.contains(BundleLayout.blobPath(artifact.manifestDigest)) else { throw .missingFile(BundleLayout.blobPath(artifact.manifestDigest)) }
            if let signatureManifest = Provenance.SHA256Digest(artifact.signature.manifestDigest), !listed.contains(BundleLayout.blobPath(signatureManifest)) {
                throw .missingFile(BundleLayout.blobPath(signatureManifest))
            }
            do { _ = try artifact.signature.verify(manifestDigest: manifest.digest, reference: artifact.source, keys: keys) } catch {
                RelaySignatureCheck.countRefusal(error)
                throw .signature(source: artifact.source, error)
            }
            var files = held.first { $0.digest == artifact.digest.description }?.files
            let payload = try Self.payload(of: artifact)
            if artifact.included, let payload {
                guard let layer = layers[artifact.digest] else { throw .missingFile(BundleLayout.blobPath(artifact.digest)) }
                do { files = try payload.checkLayer(file: layer, digest: artifact.digest.description) } catch {
                    throw .fluxRules(source: artifact.source, ["\(error)"])
                }
            } else if artifact.included {
                guard let layer = layers[artifact.digest] else { throw .missingFile(BundleLayout.blobPath(artifact.digest)) }
                guard Self.fileSize(layer) == artifact.size else { throw .digestMismatch("the layer of '\(artifact.source)' is not \(artifact.size) bytes") }
                let report: VerificationReport
                do { report = try TarballVerifier(expectedDigest: artifact.digest.description).verify(file: layer) } catch {
                    throw .fluxRules(source: artifact.source, ["\(error)"])
                }
                guard report.ok else { throw .fluxRules(source: artifact.source, report.errors) }
                files = report.files
            } else if files == nil {
                throw .notHeld(source: artifact.source, digest: artifact.digest.description)
            }
            let record = ArtifactRecord(source: artifact.source, revision: artifact.revision, commit: artifact.commit,
                                        digest: artifact.digest.description, size: artifact.size, files: files ?? 0, skipped: [],
                                        ignoreKey: "relay", createdAt: now, lastUsedAt: now, origin: artifact.origin,
                                        packagedAt: Date(timeIntervalSince1970: Double(artifact.createdUnixMs) / 1000),
                                        oci: payload)
            // The manifest served for this record is the one signed.
            do { _ = try signatureCheck.check(record, claimedManifestDigest: manifest.digest, signature: artifact.signature) } catch {
                throw .signature(source: artifact.source, error)
            }
            result.append((artifact, record))
        }
        return result
    }

    /// A chart's or OCI artifact's payload from the statement, checked to name exactly the
    /// layer and the blobs it carries.
    static func payload(of artifact: BundleArtifact) throws(BundleRefusal) -> OCIPayload? {
        guard let oci = artifact.oci else { return nil }
        guard let kind = OCIPayload.Kind(rawValue: oci.kind) else { throw .malformed("'\(artifact.source)' has the unknown kind '\(oci.kind)'") }
        let payload = OCIPayload(kind: kind, manifest: oci.manifest, mediaType: oci.mediaType, blobs: oci.blobs, tags: oci.tags,
                                 signatureLayers: oci.signatureLayers?.map { .init(mediaType: $0.mediaType, data: $0.data, annotations: $0.annotations) })
        do { try payload.validate(layerDigest: artifact.digest.description, layerSize: artifact.size) } catch {
            throw .malformed("the OCI manifest of '\(artifact.source)': \(error)")
        }
        return payload
    }

    // MARK: Status

    static func time(_ unixMs: Int64) -> String { RFC3339Format.string(Date(timeIntervalSince1970: Double(unixMs) / 1000)) }

    func journalEvent(severity: String, reason: String, name: String, message: String, metadata: [String: String]) {
        guard let journal else { return }
        let event = Relay_V1_FluxEvent.with {
            $0.kind = "Bundle"
            $0.name = name
            $0.severity = severity
            $0.reason = reason
            $0.message = message
            $0.controller = "relay-agent"
            $0.timestampUnixMs = Int64(Date().timeIntervalSince1970 * 1000)
            $0.metadata = metadata
        }
        do {
            try journal.append([.event(event)])
            AgentMetrics.journal(journal)
        } catch {
            logger.warning("cannot journal the bundle event for the relay", metadata: ["error": "\(error)"])
        }
    }
}

enum RFC3339Format {
    static func string(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

extension AgentRuntime {
    /// The importer of relay bundles into this agent's store (journal: this runtime's).
    public func bundleImporter() throws -> BundleImporter {
        try BundleImporter(config: config, store: store, signatureCheck: signatureCheck, journal: try journal(), logger: logger) { [publications] record in
            publications.announce(record)
        }
    }
}
