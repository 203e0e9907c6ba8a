import Foundation
import RelayShared

/// An agent the relay knows, with the sources granted to it.
public struct AgentIdentity: Sendable, Hashable {
    public var name: String
    public var sources: Set<String>
}

/// Maps a bearer token to an agent through the registry, which holds only SHA-256 hashes of
/// tokens (agents from relay.yaml and from `relay-server agents`). Looked up on every call,
/// so a revocation takes effect at once.
public struct AgentAuthenticator: Sendable {
    let registry: Registry

    public init(registry: Registry) { self.registry = registry }

    /// The token's SHA-256 from an `authorization` header value (`Bearer <token>`).
    public static func tokenHash(authorization: String?) -> String? {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        let token = String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : TokenHash.sha256Hex(token)
    }

    /// The agent for an `authorization` header value, with the token's hash, or nil.
    public func authenticate(authorization: String?) -> (identity: AgentIdentity, tokenSHA256: String)? {
        guard let hash = Self.tokenHash(authorization: authorization),
              let identity = try? registry.agent(forTokenSHA256: hash) else { return nil }
        return (identity, hash)
    }
}
