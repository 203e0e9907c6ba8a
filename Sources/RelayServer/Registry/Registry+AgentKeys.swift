import Crypto
import Foundation
import Provenance

/// What `relay-server agents trust` manages: the public keys whose signatures the relay
/// accepts on an agent's status bundles (several per agent: a rotation keeps the old one
/// until it is removed).
public struct AgentPublicKey: Sendable, Codable, Equatable {
    public var agent: String
    public var keyID: String
    public var pem: String
    public var addedAt: Date
}

/// One status bundle stored by `relay-server bundle import`.
public struct StatusBundleImportRecord: Sendable, Codable, Equatable {
    public var agent: String
    public var journal: String
    public var keyID: String
    /// SHA-256 of the signed statement: names this status bundle (`bundle export --since`).
    public var statementDigest: String
    public var importedAt: Date
    /// When the agent wrote it.
    public var createdAt: Date
    public var entries: Int
    /// Entries that were new at the relay (the rest were stored before: a re-import, or online).
    public var stored: Int
    /// The highest journal sequence carried (0: none).
    public var upTo: UInt64
    /// The newest `observed` time among its entries.
    public var newestObservedAt: Date?
    public var lastBundleSequence: UInt64
    public var inventory: [HeldArtifact]
}

/// An agent's air-gap transfers as the status API shows them.
public struct OfflineTransfer: Sendable, Codable, Equatable {
    public struct Export: Sendable, Codable, Equatable {
        public var sequence: UInt64
        public var createdAt: Date
    }
    public struct Import: Sendable, Codable, Equatable {
        public var importedAt: Date
        public var createdAt: Date
        public var entries: Int
        public var stored: Int
        public var journal: String
        public var upTo: UInt64
        public var lastBundleSequence: UInt64
    }
    /// The last relay bundle exported for the agent (`relay-server bundle export`).
    public var lastBundleExport: Export?
    /// The last status bundle of the agent imported (`relay-server bundle import`).
    public var lastStatusImport: Import?
    /// The newest status the relay holds from the agent (its `observed` time), by either path.
    public var newestStatusAt: Date?
}

extension Registry {

    /// The keys whose signatures count as `agent`'s.
    public func agentPublicKeys(_ agent: String) async throws -> [TrustedKey] {
        try await store.read { db in try Self.agentKeys(db, agent: agent).map(\.1) }
    }

    /// Every trusted key of every agent (to name the agent a wrongly signed bundle came from).
    public func allAgentPublicKeys() async throws -> [(agent: String, key: TrustedKey)] {
        try await store.read { db in try Self.agentKeys(db, agent: nil) }
    }

    private static func agentKeys(_ db: any SQLConnection, agent: String?) throws -> [(agent: String, key: TrustedKey)] {
        let rows = agent == nil
            ? try SQLRow.fetchAll(db, sql: "SELECT agent, der FROM agent_key ORDER BY agent, created_ms")
            : try SQLRow.fetchAll(db, sql: "SELECT agent, der FROM agent_key WHERE agent = ? ORDER BY created_ms", arguments: [agent])
        return rows.compactMap { row in
            guard let key = try? TrustedKey.parse(der: row["der"]) else { return nil }
            return (row["agent"], key)
        }
    }

    /// `relay-server agents trust NAME FILE`: adds the keys (already trusted ones are kept as
    /// they are); returns the ids added.
    public func trustAgentKeys(agent: String, keys: [TrustedKey]) async throws -> [String] {
        try await store.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM agent WHERE name = ?)", arguments: [agent]) == true else {
                throw AgentAdminError.unknown(agent)
            }
            var added: [String] = []
            for key in keys {
                let inserted = try db.execute(sql: "INSERT INTO agent_key(agent, key_id, der, created_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                              arguments: [agent, key.id, key.der, Self.milliseconds(Date())])
                if inserted > 0 { added.append(key.id) }
            }
            return added
        }
    }

    /// `relay-server agents trust NAME --remove KEYID`.
    public func removeAgentKey(agent: String, keyID: String) async throws {
        try await store.write { db in
            let removed = try db.execute(sql: "DELETE FROM agent_key WHERE agent = ? AND key_id = ?", arguments: [agent, keyID])
            guard removed > 0 else { throw AgentKeyError.noSuchKey(agent: agent, keyID: keyID) }
        }
    }

    public func agentKeyList(_ agent: String) async throws -> [AgentPublicKey] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: "SELECT * FROM agent_key WHERE agent = ? ORDER BY created_ms", arguments: [agent]).compactMap { row in
                guard let key = try? TrustedKey.parse(der: row["der"]) else { return nil }
                return AgentPublicKey(agent: row["agent"], keyID: row["key_id"], pem: key.pem,
                                      addedAt: Date(timeIntervalSince1970: Double(row["created_ms"] as Int64) / 1000))
            }
        }
    }

    public func agentExists(_ agent: String) async throws -> Bool {
        try await store.read { db in
            try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM agent WHERE name = ?)", arguments: [agent]) ?? false
        }
    }

    public func recordStatusBundleImport(_ record: StatusBundleImportRecord) async throws {
        let inventory = String(decoding: try JSONEncoder().encode(record.inventory), as: UTF8.self)
        try await store.write { db in
            try db.execute(sql: """
                INSERT INTO status_bundle_import(agent, journal, key_id, statement_sha256, imported_ms, created_ms, entries, stored,
                                                 up_to, newest_observed_ms, last_bundle_sequence, inventory)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [record.agent, record.journal, record.keyID, record.statementDigest, Self.milliseconds(record.importedAt),
                                 Self.milliseconds(record.createdAt), record.entries, record.stored, Int64(record.upTo),
                                 record.newestObservedAt.map(Self.milliseconds), Int64(record.lastBundleSequence), inventory])
        }
    }

    /// The newest status bundle imported from `agent`, or the one whose statement has this digest.
    public func lastStatusBundleImport(agent: String, statementDigest: String? = nil) async throws -> StatusBundleImportRecord? {
        try await store.read { db in
            var sql = "SELECT * FROM status_bundle_import WHERE agent = ?"
            var arguments: [(any SQLBindable)?] = [agent]
            if let statementDigest { sql += " AND statement_sha256 = ?"; arguments.append(statementDigest) }
            sql += " ORDER BY id DESC LIMIT 1"
            return try SQLRow.fetchOne(db, sql: sql, arguments: SQLArguments(arguments)).map(Self.statusImport)
        }
    }

    static func statusImport(_ row: SQLRow) -> StatusBundleImportRecord {
        func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }
        let inventory = (try? JSONDecoder().decode([HeldArtifact].self, from: Data((row["inventory"] as String).utf8))) ?? []
        return StatusBundleImportRecord(agent: row["agent"], journal: row["journal"], keyID: row["key_id"],
                                        statementDigest: row["statement_sha256"], importedAt: date(row["imported_ms"]),
                                        createdAt: date(row["created_ms"]), entries: row["entries"], stored: row["stored"],
                                        upTo: UInt64(row["up_to"] as Int64), newestObservedAt: (row["newest_observed_ms"] as Int64?).map(date),
                                        lastBundleSequence: UInt64(row["last_bundle_sequence"] as Int64), inventory: inventory)
    }

    /// Per agent: the last status bundle imported and the newest status observed (either path).
    /// The last relay bundle exported is filled in by `agentSummaries` (`lastBundleExport(agent:)`).
    func offlineTransfers(_ db: any SQLConnection) throws -> [String: OfflineTransfer] {
        var result: [String: OfflineTransfer] = [:]
        func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }
        let imports = try SQLRow.fetchAll(db, sql: """
            SELECT i.* FROM status_bundle_import i
            JOIN (SELECT agent, MAX(id) AS newest FROM status_bundle_import GROUP BY agent) n ON i.id = n.newest
            """)
        for row in imports {
            let record = Self.statusImport(row)
            result[record.agent] = OfflineTransfer(
                lastStatusImport: .init(importedAt: record.importedAt, createdAt: record.createdAt, entries: record.entries,
                                        stored: record.stored, journal: record.journal, upTo: record.upTo,
                                        lastBundleSequence: record.lastBundleSequence),
                newestStatusAt: record.newestObservedAt)
        }
        for agent in try String.fetchAll(db, sql: "SELECT name FROM agent") {
            // The entry received last (indexed); an import may carry older observations than one before it.
            guard let observed = try Int64.fetchOne(db, sql: "SELECT observed_ms FROM status_entry WHERE agent = ? ORDER BY id DESC LIMIT 1",
                                                    arguments: [agent]) else { continue }
            var transfer = result[agent] ?? OfflineTransfer()
            transfer.newestStatusAt = max(transfer.newestStatusAt ?? .distantPast, date(observed))
            result[agent] = transfer
        }
        return result
    }
}

public enum AgentKeyError: Error, CustomStringConvertible {
    case noSuchKey(agent: String, keyID: String)
    public var description: String {
        switch self {
        case .noSuchKey(let agent, let keyID): "agent '\(agent)' has no trusted key \(keyID) (see: relay-server agents trust \(agent) --list)"
        }
    }
}

extension TrustedKey {
    /// A key from its SubjectPublicKeyInfo DER (as stored).
    static func parse(der: Data) throws -> TrustedKey {
        TrustedKey(try P256.Signing.PublicKey(derRepresentation: der))
    }
}
