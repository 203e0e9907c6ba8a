import Foundation
import GRDB

/// Who may connect, as one versioned snapshot: every valid token hash with its agent and
/// grants. Triggers bump `access_version` on any change to agents, tokens or grants, made by
/// this process or another (`relay-server agents revoke` writes the same file), so the relay
/// learns of a change by reading one row instead of re-checking tokens per connection.
extension Registry {
    static func registerAccessMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v9-access-version") { db in
            try db.execute(sql: """
                CREATE TABLE access_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
                INSERT INTO access_version(id, version) VALUES (1, 1);
                """)
            for table in ["agent", "agent_token", "grant_"] {
                for event in ["INSERT", "UPDATE", "DELETE"] {
                    // `agent` rows change on every connect (connected, last_seen_ms): only the
                    // columns that decide access count there.
                    let when = table == "agent" && event == "UPDATE" ? "UPDATE OF name, managed_by" : event
                    try db.execute(sql: """
                        CREATE TRIGGER access_\(table)_\(event.lowercased()) AFTER \(when) ON \(table)
                        BEGIN UPDATE access_version SET version = version + 1 WHERE id = 1; END
                        """)
                }
            }
        }
    }

    /// The current access version (changes whenever a token, agent or grant does).
    public func accessVersion() async throws -> Int64 {
        try await database.read { db in try Int64.fetchOne(db, sql: "SELECT version FROM access_version WHERE id = 1") ?? 0 }
    }

    /// Every valid token hash with its agent and grants, and the version they belong to (one
    /// read transaction: the two agree).
    public func accessSnapshot() async throws -> AccessSnapshot {
        try await database.read { db in
            let version = try Int64.fetchOne(db, sql: "SELECT version FROM access_version WHERE id = 1") ?? 0
            var grants: [String: Set<String>] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT agent, source FROM grant_") {
                grants[row["agent"] as String, default: []].insert(row["source"])
            }
            var identities: [String: AgentIdentity] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT token_sha256, agent FROM agent_token") {
                let name: String = row["agent"]
                identities[row["token_sha256"]] = AgentIdentity(name: name, sources: grants[name] ?? [])
            }
            return AccessSnapshot(version: version, identities: identities)
        }
    }
}

/// Valid token hashes → agents, at one access version.
public struct AccessSnapshot: Sendable {
    public var version: Int64
    public var identities: [String: AgentIdentity]
}
