import Foundation
import RelayShared

/// An agent's tokens as `relay-server agents list` shows them (hashes only: the relay never
/// stores a token itself).
public struct AgentTokens: Sendable, Codable {
    public struct Token: Sendable, Codable { public var sha256Prefix: String; public var createdAt: Date? }
    public var name: String
    /// "config" (relay.yaml) or "cli" (relay-server agents).
    public var managedBy: String
    public var sources: [String]
    public var tokens: [Token]
}

public enum AgentAdminError: Error, CustomStringConvertible {
    case exists(String), unknown(String), configManaged(String), lastToken(String), unknownSource(String), noSuchToken(String)
    public var description: String {
        switch self {
        case .exists(let name): "agent '\(name)' exists already"
        case .unknown(let name): "no agent named '\(name)'"
        case .configManaged(let name): "agent '\(name)' is defined in relay.yaml: change its token there (agents[].tokenSHA256)"
        case .lastToken(let name): "agent '\(name)' has no other token: rotate first, or delete the agent"
        case .unknownSource(let name): "no source named '\(name)' in relay.yaml"
        case .noSuchToken(let prefix): "no token of this agent starts with \(prefix)"
        }
    }
}

extension Registry {

    /// A new agent managed from the CLI; returns its first token (shown once, stored hashed).
    public func createAgent(_ name: String, sources: [String]) async throws -> String {
        let token = TokenHash.generate()
        try await store.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT COUNT(*) > 0 FROM agent WHERE name = ?", arguments: [name]) == false else {
                throw AgentAdminError.exists(name)
            }
            try db.execute(sql: "INSERT INTO agent(name, managed_by) VALUES (?, 'cli')", arguments: [name])
            for source in sources { try db.execute(sql: "INSERT INTO grant_(agent, source) VALUES (?, ?)", arguments: [name, source]) }
            try db.execute(sql: "INSERT INTO agent_token(token_sha256, agent, created_ms) VALUES (?, ?, ?)",
                           arguments: [TokenHash.sha256Hex(token), name, Self.milliseconds(Date())])
        }
        return token
    }

    /// Adds a token; the existing ones stay valid until revoked. Returns the new token.
    public func rotateToken(agent name: String) async throws -> String {
        let token = TokenHash.generate()
        try await store.write { db in
            try Self.requireCLIManaged(db, name)
            try db.execute(sql: "INSERT INTO agent_token(token_sha256, agent, created_ms) VALUES (?, ?, ?)",
                           arguments: [TokenHash.sha256Hex(token), name, Self.milliseconds(Date())])
        }
        return token
    }

    /// Revokes every token but the newest (after a rotation), or the one whose hash starts
    /// with `sha256Prefix`. Returns how many were revoked.
    @discardableResult
    public func revokeTokens(agent name: String, sha256Prefix: String? = nil) async throws -> Int {
        try await store.write { db in
            try Self.requireCLIManaged(db, name)
            let tokens = try SQLRow.fetchAll(db, sql: "SELECT token_sha256 FROM agent_token WHERE agent = ? ORDER BY created_ms DESC, rowid DESC",
                                          arguments: [name]).map { $0["token_sha256"] as String }
            let doomed: [String]
            if let prefix = sha256Prefix?.lowercased() {
                doomed = tokens.filter { $0.hasPrefix(prefix) }
                guard !doomed.isEmpty else { throw AgentAdminError.noSuchToken(prefix) }
            } else {
                guard tokens.count > 1 else { throw AgentAdminError.lastToken(name) }
                doomed = Array(tokens.dropFirst())
            }
            guard doomed.count < tokens.count else { throw AgentAdminError.lastToken(name) }
            for hash in doomed { try db.execute(sql: "DELETE FROM agent_token WHERE token_sha256 = ?", arguments: [hash]) }
            return doomed.count
        }
    }

    /// Removes a CLI-managed agent and all its tokens (its delivery and status history stays).
    public func deleteAgent(_ name: String) async throws {
        try await store.write { db in
            try Self.requireCLIManaged(db, name)
            try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM agent WHERE name = ?", arguments: [name])
        }
    }

    public func agentTokens() async throws -> [AgentTokens] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: "SELECT name, managed_by FROM agent ORDER BY name").map { row in
                let name: String = row["name"]
                let sources = try String.fetchAll(db, sql: "SELECT source FROM grant_ WHERE agent = ? ORDER BY source", arguments: [name])
                let tokens = try SQLRow.fetchAll(db, sql: "SELECT token_sha256, created_ms FROM agent_token WHERE agent = ? ORDER BY created_ms",
                                              arguments: [name]).map { token -> AgentTokens.Token in
                    let created: Int64 = token["created_ms"]
                    return .init(sha256Prefix: String((token["token_sha256"] as String).prefix(12)),
                                 createdAt: created > 0 ? Date(timeIntervalSince1970: Double(created) / 1000) : nil)
                }
                return AgentTokens(name: name, managedBy: row["managed_by"], sources: sources, tokens: tokens)
            }
        }
    }

    private static func requireCLIManaged(_ db: any SQLConnection, _ name: String) throws {
        guard let managed = try String.fetchOne(db, sql: "SELECT managed_by FROM agent WHERE name = ?", arguments: [name]) else {
            throw AgentAdminError.unknown(name)
        }
        guard managed == "cli" else { throw AgentAdminError.configManaged(name) }
    }
}
