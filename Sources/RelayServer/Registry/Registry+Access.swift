import Foundation

/// Who may connect, as one versioned snapshot: every valid token hash with its agent and
/// grants. Triggers bump `access_version` on any change to agents, tokens or grants, made by
/// this process or another (`relay-server agents revoke` writes the same file), so the relay
/// learns of a change by reading one row instead of re-checking tokens per connection.
extension Registry {

    /// The current access version (changes whenever a token, agent or grant does).
    public func accessVersion() async throws -> Int64 {
        try await store.read { db in try Int64.fetchOne(db, sql: "SELECT version FROM access_version WHERE id = 1") ?? 0 }
    }

    /// Every valid token hash with its agent and grants, and the version they belong to (one
    /// read transaction: the two agree).
    public func accessSnapshot() async throws -> AccessSnapshot {
        try await store.read { db in
            let version = try Int64.fetchOne(db, sql: "SELECT version FROM access_version WHERE id = 1") ?? 0
            var grants: [String: Set<String>] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, source FROM grant_") {
                grants[row["agent"] as String, default: []].insert(row["source"])
            }
            var identities: [String: AgentIdentity] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT token_sha256, agent FROM agent_token") {
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
