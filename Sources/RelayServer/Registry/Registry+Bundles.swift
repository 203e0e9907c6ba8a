import Foundation
import Provenance

/// One relay bundle written for an agent (`relay-server bundle export`).
public struct BundleExportRecord: Sendable, Codable, Equatable {
    public var agent: String
    public var sequence: UInt64
    public var createdAt: Date
    public var expiresAt: Date?
    /// "full" or "delta" (`--since`).
    public var kind: String
    public var bytes: UInt64
    public var parts: Int
}

extension Registry {

    /// Reserves the next bundle sequence of `agent` (one more than any reserved before).
    public func reserveBundleSequence(agent: String, createdAt: Date, expiresAt: Date?, kind: String) async throws -> UInt64 {
        try await store.write { db in
            let last = try Int64.fetchOne(db, sql: "SELECT MAX(sequence) FROM bundle_export WHERE agent = ?", arguments: [agent]) ?? 0
            let next = last + 1
            try db.execute(sql: "INSERT INTO bundle_export(agent, sequence, created_ms, expires_ms, kind) VALUES (?, ?, ?, ?, ?)",
                           arguments: [agent, next, Self.milliseconds(createdAt), expiresAt.map(Self.milliseconds), kind])
            return UInt64(next)
        }
    }

    /// Marks an export written (its size and parts).
    public func completeBundleExport(agent: String, sequence: UInt64, bytes: UInt64, parts: Int) async throws {
        try await store.write { db in
            try db.execute(sql: "UPDATE bundle_export SET completed = 1, bytes = ?, parts = ? WHERE agent = ? AND sequence = ?",
                           arguments: [Int64(bytes), parts, agent, Int64(sequence)])
        }
    }

    /// The last bundle written for `agent` (completed), for the status API.
    public func lastBundleExport(agent: String) async throws -> (sequence: UInt64, createdAt: Date)? {
        try await lastBundleExportRecord(agent: agent).map { ($0.sequence, $0.createdAt) }
    }

    public func lastBundleExportRecord(agent: String) async throws -> BundleExportRecord? {
        try await store.read { db in
            try SQLRow.fetchOne(db, sql: "SELECT * FROM bundle_export WHERE agent = ? AND completed = 1 ORDER BY sequence DESC LIMIT 1",
                             arguments: [agent]).map { row in
                BundleExportRecord(agent: row["agent"], sequence: UInt64(row["sequence"] as Int64),
                                   createdAt: Date(timeIntervalSince1970: Double(row["created_ms"] as Int64) / 1000),
                                   expiresAt: (row["expires_ms"] as Int64?).map { Date(timeIntervalSince1970: Double($0) / 1000) },
                                   kind: row["kind"], bytes: UInt64(row["bytes"] as Int64), parts: row["parts"])
            }
        }
    }

    /// What the relay holds of `agent`'s status: its newest journal (the one it stored last)
    /// and the highest sequence stored from it. Carried back to the agent in the next bundle.
    public func statusAcknowledgement(agent: String) async throws -> StatusAcknowledgement? {
        try await store.read { db in
            // The journal heard from last, and everything received from it (the tunnel's ack too).
            guard let row = try SQLRow.fetchOne(db, sql: """
                    SELECT journal, up_to FROM status_journal_mark WHERE agent = ? ORDER BY updated_ms DESC, rowid DESC LIMIT 1
                    """, arguments: [agent]) else { return nil }
            return StatusAcknowledgement(journalID: row["journal"], upTo: UInt64(row["up_to"] as Int64))
        }
    }

    /// The sources granted to `agent` in the registry (agents made with `relay-server agents`).
    public func grantedSources(agent: String) async throws -> [String] {
        try await store.read { db in
            try String.fetchAll(db, sql: "SELECT source FROM grant_ WHERE agent = ? ORDER BY source", arguments: [agent])
        }
    }
}
