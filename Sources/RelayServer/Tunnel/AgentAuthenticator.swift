import RelayShared

/// An agent the relay knows, with the sources granted to it.
public struct AgentIdentity: Sendable, Hashable {
    public var name: String
    public var sources: Set<String>
}

/// Maps a bearer token to an agent. Only SHA-256 hashes of tokens are held; every
/// candidate is compared in constant time and the loop never exits early, so timing tells
/// nothing about which (or whether any) agent matched.
public struct AgentAuthenticator: Sendable {
    private let agents: [(hash: String, identity: AgentIdentity)]

    public init(agents: [ResolvedServerConfig.Agent]) {
        self.agents = agents.map { ($0.tokenSHA256, AgentIdentity(name: $0.name, sources: Set($0.sources))) }
    }

    /// The agent for an `authorization` header value (`Bearer <token>`), or nil.
    public func authenticate(authorization: String?) -> AgentIdentity? {
        guard let authorization, authorization.count > 7,
              authorization.prefix(7).lowercased() == "bearer " else { return nil }
        let hash = TokenHash.sha256Hex(String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        var found: AgentIdentity?
        for agent in agents where TokenHash.constantTimeEqual(agent.hash, hash) {
            found = agent.identity
        }
        return found
    }
}
