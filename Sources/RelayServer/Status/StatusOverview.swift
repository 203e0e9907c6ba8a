import Foundation

/// Clusters × sources: for each agent and granted source, what was delivered, what Flux
/// applied and whether it is healthy. The page's matrix and `GET /api/v1/overview`.
public struct StatusOverview: Sendable, Codable {
    public struct Cell: Sendable, Codable, Equatable {
        public var agent: String
        public var source: String
        /// The newest revision the agent verified and published.
        public var delivered: String?
        public var deliveredAt: Date?
        /// The newest packaged revision of the source.
        public var latest: String?
        /// What Flux applied from this source on this cluster (from the Flux objects that
        /// consume it) and their combined state: the worst of them.
        public var applied: String?
        public var state: String
        public var message: String
        public var objects: [FluxObjectState]
    }

    public var agents: [AgentSummary]
    public var sources: [String]
    public var cells: [Cell]
    public var generatedAt: Date
    /// The feed position this overview includes.
    public var feedID: Int64

    /// Worst first: a cell shows the most urgent state among its objects.
    static let severity = ["failed": 0, "failing": 1, "terminating": 2, "progressing": 3, "unknown": 4, "suspended": 5, "ready": 6]

    public static func build(registry: Registry, sources: [String]) async throws -> StatusOverview {
        let feedID = try await registry.latestStatusID()
        let agents = try await registry.agentSummaries()
        let latest = try await registry.latestArtifacts()
        let deliveries = try await registry.latestDeliveries()
        let objects = try await registry.fluxObjects()
        var cells: [Cell] = []
        for agent in agents {
            for source in agent.sources {
                let delivery = deliveries.first { $0.agent == agent.name && $0.source == source }
                let consuming = objects.filter { $0.agent == agent.name && $0.source == source }
                // Health is what applies the source (Kustomization, HelmRelease); the source
                // objects themselves count only when nothing applies it.
                let appliers = consuming.filter { $0.kind == "Kustomization" || $0.kind == "HelmRelease" }
                let judged = appliers.isEmpty ? consuming : appliers
                let worst = judged.min { (severity[$0.state] ?? 4) < (severity[$1.state] ?? 4) }
                let state: String
                if judged.isEmpty {
                    state = delivery == nil ? "waiting" : "delivered"
                } else {
                    state = worst?.state ?? "unknown"
                }
                cells.append(Cell(agent: agent.name, source: source, delivered: delivery?.revision, deliveredAt: delivery?.deliveredAt,
                                  latest: latest[source]?.revision,
                                  applied: judged.map(\.revisionApplied).filter { !$0.isEmpty }.min(),
                                  state: state, message: worst?.message ?? "", objects: consuming))
            }
        }
        return StatusOverview(agents: agents, sources: sources, cells: cells, generatedAt: Date(), feedID: feedID)
    }
}
