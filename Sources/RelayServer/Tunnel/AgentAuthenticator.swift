import Foundation
import RelayShared

/// An agent the relay knows, with the sources granted to it.
public struct AgentIdentity: Sendable, Hashable {
    public var name: String
    public var sources: Set<String>
}

/// Bearer tokens as the tunnel receives them. The registry holds only SHA-256 hashes of
/// tokens (agents from relay.yaml and from `relay-server agents`); `AccessDirectory` maps a
/// hash to its agent.
public enum AgentAuthenticator {
    /// The token's SHA-256 from an `authorization` header value (`Bearer <token>`).
    public static func tokenHash(authorization: String?) -> String? {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        let token = String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : TokenHash.sha256Hex(token)
    }
}
