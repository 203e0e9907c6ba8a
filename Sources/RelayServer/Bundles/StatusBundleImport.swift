import Foundation
import Provenance
import Wire

/// Why a status bundle was refused. Nothing is stored on a refusal.
public enum StatusBundleRefusal: Error, CustomStringConvertible, Equatable {
    case file(StatusBundleFileError)
    case malformed(String)
    case unknownAgent(String)
    case noTrustedKey(agent: String)
    case badSignature(agent: String, keyIDs: String)
    case wrongAgent(claimed: String, signer: String, keyID: String)

    public var description: String {
        switch self {
        case .file(let error): "\(error)"
        case .malformed(let detail): "not a valid status bundle: \(detail)"
        case .unknownAgent(let agent):
            "the status bundle names agent '\(agent)', which this relay does not know (relay.yaml agents, or relay-server agents create)"
        case .noTrustedKey(let agent):
            "no key is trusted for agent '\(agent)': on the agent run `relay-agent keys public --config agent.yaml > \(agent).pub`, carry the file here, then `relay-server agents trust \(agent) \(agent).pub --config relay.yaml`"
        case .badSignature(let agent, let keyIDs):
            "the signature does not verify under agent '\(agent)''s trusted keys (\(keyIDs)): the file was altered, or signed by a key not trusted for this agent (rotated? run `relay-server agents trust \(agent) NEW.pub`)"
        case .wrongAgent(let claimed, let signer, let keyID):
            "the status bundle claims to be agent '\(claimed)''s but is signed by agent '\(signer)''s key \(keyID): refused"
        }
    }

    /// Stable, for scripts (`code` in the JSON printed on refusal).
    public var code: String {
        switch self {
        case .file(let error): error.code
        case .malformed: "malformed"
        case .unknownAgent: "unknown_agent"
        case .noTrustedKey: "no_trusted_key"
        case .badSignature: "bad_signature"
        case .wrongAgent: "wrong_agent"
        }
    }
}

/// What one import did.
public struct StatusBundleImportSummary: Sendable, Codable, Equatable {
    public var agent: String
    public var journal: String
    public var keyID: String
    public var entries: Int
    /// Entries new at the relay.
    public var stored: Int
    /// Entries the relay held already (a re-import, or received online).
    public var duplicates: Int
    /// The highest journal sequence carried (0: none); the next relay bundle acknowledges it.
    public var upTo: UInt64
    /// Inventory artifacts recorded as delivered (those this relay offered the agent).
    public var delivered: Int
    public var inventory: Int

    enum CodingKeys: String, CodingKey {
        case agent, journal, keyID = "key_id", entries, stored, duplicates, upTo = "up_to", delivered, inventory
    }
}

/// `relay-server bundle import`: verifies a status bundle under the trusted keys of the agent
/// it names, then stores its entries through the tunnel's own path (`storeStatus`: same
/// idempotence, so importing twice stores nothing new) and records the artifacts it holds as
/// delivered. The running relay notices the rows (`StatusFeed` catch-up) and streams and
/// notifies them like any other.
public struct StatusBundleImport: Sendable {
    let registry: Registry
    let now: @Sendable () -> Date

    public init(registry: Registry, now: @escaping @Sendable () -> Date = Date.init) {
        self.registry = registry
        self.now = now
    }

    public func run(path: String) async throws -> StatusBundleImportSummary {
        let envelope: SignedEnvelope
        do { envelope = try StatusBundleFile.read(path: path) } catch { throw StatusBundleRefusal.file(error) }
        let (agent, statement, signer) = try await verify(envelope)
        let batch: Relay_V1_StatusBatch
        do { batch = try Relay_V1_StatusBatch(serializedBytes: statement.statusBatch) } catch {
            throw StatusBundleRefusal.malformed("its status entries do not decode: \(error)")
        }
        guard batch.journalID == statement.journalID, batch.entries.count == statement.entryCount else {
            throw StatusBundleRefusal.malformed("its entries (journal \(batch.journalID), \(batch.entries.count)) differ from its statement (journal \(statement.journalID), \(statement.entryCount))")
        }
        guard !statement.journalID.isEmpty || batch.entries.isEmpty else { throw StatusBundleRefusal.malformed("no journal id") }

        let stored = batch.entries.isEmpty ? [] : try await registry.storeStatus(agent: agent, journal: statement.journalID, entries: batch.entries,
                                                                             receivedAt: now())
        let delivered = try await recordDeliveries(agent: agent, inventory: statement.inventory)
        let newest = batch.entries.map(\.observedUnixMs).max().flatMap { $0 > 0 ? Date(timeIntervalSince1970: Double($0) / 1000) : nil }
        let upTo = batch.entries.last?.sequence ?? 0
        try await registry.recordStatusBundleImport(StatusBundleImportRecord(
            agent: agent, journal: statement.journalID, keyID: signer.id, statementDigest: SHA256Digest(of: envelope.statement).description,
            importedAt: now(), createdAt: Date(timeIntervalSince1970: Double(statement.createdUnixMs) / 1000), entries: batch.entries.count,
            stored: stored.count, upTo: upTo, newestObservedAt: newest, lastBundleSequence: statement.lastBundleSequence,
            inventory: statement.inventory))
        return StatusBundleImportSummary(agent: agent, journal: statement.journalID, keyID: signer.id, entries: batch.entries.count,
                                         stored: stored.count, duplicates: batch.entries.count - stored.count, upTo: upTo,
                                         delivered: delivered, inventory: statement.inventory.count)
    }

    /// The agent whose trusted key signed the statement, and the statement. The statement is
    /// decoded only after a trusted key verified it; before that, only to word the refusal.
    func verify(_ envelope: SignedEnvelope) async throws -> (String, StatusStatement, TrustedKey) {
        let trusted = try await registry.allAgentPublicKeys()
        let signer = trusted.first { $0.key.verifies(envelope.signature, of: envelope.statement) }
        guard let signer else {
            guard let claimed = try? JSONDecoder().decode(StatusStatement.self, from: envelope.statement) else {
                throw StatusBundleRefusal.malformed("its statement is not a status statement, and no trusted key signed it")
            }
            guard try await registry.agentExists(claimed.agent) else { throw StatusBundleRefusal.unknownAgent(claimed.agent) }
            let keys = trusted.filter { $0.agent == claimed.agent }.map(\.key)
            guard !keys.isEmpty else { throw StatusBundleRefusal.noTrustedKey(agent: claimed.agent) }
            throw StatusBundleRefusal.badSignature(agent: claimed.agent, keyIDs: TrustedKeys(keys).ids)
        }
        let statement: StatusStatement
        do { statement = try JSONDecoder().decode(StatusStatement.self, from: envelope.statement) } catch {
            throw StatusBundleRefusal.malformed("signed by agent '\(signer.agent)', but its statement does not decode: \(error)")
        }
        guard statement.type == StatusStatement.currentType else {
            throw StatusBundleRefusal.malformed("statement type '\(statement.type)', expected \(StatusStatement.currentType) (a relay bundle? `relay-agent import` takes those)")
        }
        guard statement.agent == signer.agent else {
            throw StatusBundleRefusal.wrongAgent(claimed: statement.agent, signer: signer.agent, keyID: signer.key.id)
        }
        guard try await registry.agentExists(statement.agent) else { throw StatusBundleRefusal.unknownAgent(statement.agent) }
        return (statement.agent, statement, signer.key)
    }

    /// What the agent holds counts as delivered when this relay packaged it for a source the
    /// agent is granted (as an online Ack would).
    func recordDeliveries(agent: String, inventory: [HeldArtifact]) async throws -> Int {
        guard !inventory.isEmpty else { return 0 }
        let granted = Set(try await registry.agentSummaries().first { $0.name == agent }?.sources ?? [])
        var count = 0
        for held in inventory where granted.contains(held.source) {
            guard let packaged = try await registry.digestBelongs(held.digest.description, toAnyOf: [held.source]) else { continue }
            try await registry.recordDelivery(agent: agent, source: held.source, revision: packaged.revision, digest: packaged.digest)
            count += 1
        }
        return count
    }
}
