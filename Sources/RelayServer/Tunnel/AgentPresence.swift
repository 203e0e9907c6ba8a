import Foundation
import Logging
import Metrics
import Synchronization

/// Which agents are connected: the live sessions (Hello accepted, not yet ended) of each
/// agent, kept in step with the registry's `connected` flag and `relay_agents_connected`.
/// An agent is connected while any of its sessions is live, so the older of two sessions
/// ending (e.g. the one a reconnect replaced) does not show it disconnected. Registry writes
/// happen under the lock, in the order the sessions start and end.
final class AgentPresence: Sendable {
    private let live = Mutex<[String: Int]>([:])
    private let registry: Registry
    private let failure: RegistryFailure

    init(registry: Registry, failure: RegistryFailure) {
        self.registry = registry
        self.failure = failure
    }

    /// A session's Hello was accepted. Throws (UNAVAILABLE, naming the cause) when the
    /// registry cannot record it; the session then does not count.
    func sessionStarted(agent: String, version: String) throws {
        try live.withLock { live in
            try failure.run("record the connection") { try registry.agentConnected(agent, version: version) }
            live[agent, default: 0] += 1
            RelayMetrics.agentsConnected.record(live.count)
        }
    }

    /// A session that had started ended.
    func sessionEnded(agent: String) {
        live.withLock { live in
            guard let count = live[agent] else { return }
            if count > 1 {
                live[agent] = count - 1
                return
            }
            live[agent] = nil
            RelayMetrics.agentsConnected.record(live.count)
            try? registry.agentSeen(agent, connected: false)
        }
    }
}

/// One Connect stream's part in `AgentPresence`, and its logs.
struct SessionPresence {
    let agent: String
    let presence: AgentPresence
    let logger: Logger
    private var isStarted = false

    init(agent: String, presence: AgentPresence, logger: Logger) {
        self.agent = agent
        self.presence = presence
        self.logger = logger
    }

    mutating func started(version: String, held: Int) throws {
        try presence.sessionStarted(agent: agent, version: version)
        isStarted = true
        logger.info("agent connected", metadata: ["agent": "\(agent)", "version": "\(version)", "held": "\(held)"])
    }

    func ended() {
        guard isStarted else { return }
        presence.sessionEnded(agent: agent)
        logger.info("agent disconnected", metadata: ["agent": "\(agent)"])
    }
}

extension RelayMetrics {
    /// Sessions drained because a newer session of the same agent started.
    static let sessionsSuperseded = Counter(label: "relay_sessions_superseded_total")
}
