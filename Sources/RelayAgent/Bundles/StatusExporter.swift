import ArtifactMirror
import Foundation
import Provenance
import Wire

/// Why a status bundle could not be written: each case says what to do next.
public enum StatusExportError: Error, CustomStringConvertible {
    case nameRequired
    case key(KeyError)
    case journal(String)
    case file(StatusBundleFileError)
    case store(String)

    public var description: String {
        switch self {
        case .nameRequired:
            "agent.yaml has no name: set `name` to this agent's name at the relay (a status bundle says which agent wrote it)"
        case .key(let error): "agent key: \(error)"
        case .journal(let detail): detail
        case .file(let error): "\(error)"
        case .store(let detail): "cannot read the artifact store: \(detail)"
        }
    }

    /// Stable, for result files and exit codes.
    public var code: String {
        switch self {
        case .nameRequired: "name_required"
        case .key(let error): error.code
        case .journal: "journal_unavailable"
        case .file(let error): "output_\(error.code)"
        case .store: "store_unreadable"
        }
    }
}

/// The agent's signing key for status bundles: `<dataDir>/agent.key` (ECDSA P-256, created on
/// first use). Its public key is registered at the relay with `relay-server agents trust`.
public enum AgentKey {
    public static func path(dataDirectory: URL) -> String { dataDirectory.appendingPathComponent("agent.key").path }

    public static func loadOrCreate(dataDirectory: URL) throws(KeyError) -> SigningKey {
        try SigningKey.loadOrCreate(path: path(dataDirectory: dataDirectory)).key
    }
}

/// What one export wrote.
public struct StatusExportSummary: Sendable, Codable, Equatable {
    public var output: String
    public var agent: String
    public var journal: String
    public var entries: Int
    /// First and last sequence carried (0 when none).
    public var first: UInt64
    public var last: UInt64
    public var inventory: Int
    public var lastBundleSequence: UInt64
    public var keyID: String
}

/// Writes a status bundle: every journal entry not yet acknowledged (as one
/// `relay.v1.StatusBatch`, exactly as the tunnel carries them), what the store holds and the
/// last relay bundle imported, signed with the agent key. The journal is not trimmed: only an
/// acknowledgement does that (the tunnel's StatusAck, or a relay bundle's `statusAck`), so a
/// status bundle that is lost on the way costs nothing: the next one carries the same entries.
public struct StatusExporter: Sendable {
    public let agent: String
    let journal: StatusJournal
    let store: ArtifactStore
    let key: SigningKey
    let dataDirectory: URL
    let now: @Sendable () -> Date

    public init(agent: String?, journal: StatusJournal, store: ArtifactStore, key: SigningKey, dataDirectory: URL,
                now: @escaping @Sendable () -> Date = Date.init) throws(StatusExportError) {
        guard let agent, !agent.isEmpty else { throw .nameRequired }
        self.agent = agent
        self.journal = journal
        self.store = store
        self.key = key
        self.dataDirectory = dataDirectory
        self.now = now
    }

    /// The signed envelope of the current status (nothing written).
    public func envelope() throws(StatusExportError) -> (SignedEnvelope, StatusStatement) {
        let entries = journal.entries(after: journal.acknowledgedSequence, limit: .max, maxBytes: .max)
        let batch = Relay_V1_StatusBatch.with {
            $0.journalID = journal.journalID
            $0.entries = entries
        }
        let encodedBatch: Data
        do { encodedBatch = try batch.serializedBytes() } catch { throw .journal("cannot encode the status entries: \(error)") }
        let records: [ArtifactRecord]
        do { records = try store.allRecords() } catch { throw .store("\(error)") }
        var held = Set<HeldArtifact>()
        // Only what the store really holds (a quarantined file is gone): a delta bundle leaves
        // out what is listed here.
        for record in records where store.holdsFile(of: record) {
            guard let digest = SHA256Digest(record.digest) else { continue }
            held.insert(HeldArtifact(source: record.source, revision: record.revision, digest: digest))
        }
        let inventory = held.sorted { ($0.source, $0.revision, $0.digest.hex) < ($1.source, $1.revision, $1.digest.hex) }
        let statement = StatusStatement(agent: agent, createdUnixMs: Int64((now().timeIntervalSince1970 * 1000).rounded()),
                                        journalID: journal.journalID, statusBatch: encodedBatch, entryCount: entries.count,
                                        inventory: inventory, lastBundleSequence: Self.lastBundleSequence(dataDirectory: dataDirectory))
        return (SignedEnvelope.sign(statement.encoded(), with: key), statement)
    }

    /// Writes the status bundle to `output` (atomically).
    @discardableResult
    public func export(output: URL) throws(StatusExportError) -> StatusExportSummary {
        let (envelope, statement) = try envelope()
        do { try StatusBundleFile.write(envelope, to: output) } catch { throw .file(error) }
        let batch = (try? Relay_V1_StatusBatch(serializedBytes: statement.statusBatch)) ?? Relay_V1_StatusBatch()
        return StatusExportSummary(output: output.path, agent: agent, journal: statement.journalID, entries: statement.entryCount,
                                   first: batch.entries.first?.sequence ?? 0, last: batch.entries.last?.sequence ?? 0,
                                   inventory: statement.inventory.count, lastBundleSequence: statement.lastBundleSequence,
                                   keyID: envelope.keyID)
    }

    /// The last relay bundle imported (`BundleState`): 0 when none was.
    static func lastBundleSequence(dataDirectory: URL) -> UInt64 {
        BundleState.load(dataDirectory: dataDirectory).lastSequence
    }
}

extension AgentRuntime {
    /// The exporter of this agent's status (its journal, store and key): used by
    /// `relay-agent export-status` and by the running agent's inbox.
    public func statusExporter() throws(StatusExportError) -> StatusExporter {
        guard let name = config.name, !name.isEmpty else { throw .nameRequired }
        let journal: StatusJournal
        do { journal = try self.journal() } catch let error as JournalError {
            if case .inUse = error {
                throw .journal("\(error); export through the running agent (relay-agent export-status finds it), or stop it first")
            }
            throw .journal("\(error)")
        } catch {
            throw .journal("\(error)")
        }
        let key: SigningKey
        do { key = try AgentKey.loadOrCreate(dataDirectory: config.dataDirectory) } catch { throw .key(error) }
        return try StatusExporter(agent: name, journal: journal, store: store, key: key, dataDirectory: config.dataDirectory)
    }
}
