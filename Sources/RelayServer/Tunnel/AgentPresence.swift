import Foundation
import Logging
import Metrics
import Synchronization

/// Which agents are connected: the live sessions (Hello accepted, not yet ended) of each
/// agent, kept in step with the registry's `connected` flag and `relay_agents_connected`.
/// An agent is connected while any of its sessions is live, so the older of two sessions
/// ending (e.g. the one a reconnect replaced) does not show it disconnected.
///
/// Registry writes go through the group commit, queued under the lock in the order sessions
/// start and end (so the registry's last word for an agent is the latest): a reconnecting
/// fleet shares a few transactions instead of one fsync per agent (measured: that write was
/// what stalled a cold start of thousands of agents).
final class AgentPresence: Sendable {
    private let live = Mutex<[String: Int]>([:])
    private let commits: GroupCommit
    private let failure: RegistryFailure
    /// This relay process's name among replicas (`ResolvedServerConfig.replica`).
    private let replica: String

    init(commits: GroupCommit, failure: RegistryFailure, replica: String = "") {
        self.commits = commits
        self.failure = failure
        self.replica = replica
    }

    /// A session's Hello was accepted. Throws (UNAVAILABLE, naming the cause) when the
    /// registry cannot record it; the session then does not count.
    func sessionStarted(agent: String, version: String) async throws {
        let now = Registry.milliseconds(Date())
        let recorded = live.withLock { live in
            live[agent, default: 0] += 1
            RelayMetrics.agentsConnected.record(live.count)
            // Queued under the lock: ordered with the other sessions' starts and ends.
            return commits.queue { [replica] db in
                try db.execute(sql: "UPDATE agent SET connected = 1, version = ?, last_seen_ms = ?, replica = ? WHERE name = ?",
                               arguments: [version, now, replica, agent])
            }
        }
        do {
            try await recorded.committed()
        } catch {
            sessionEnded(agent: agent)
            throw failure.rpcError(error, while: "record the connection")
        }
    }

    /// A session that had started ended.
    func sessionEnded(agent: String) {
        let now = Registry.milliseconds(Date())
        live.withLock { live in
            guard let count = live[agent] else { return }
            if count > 1 {
                live[agent] = count - 1
                return
            }
            live[agent] = nil
            RelayMetrics.agentsConnected.record(live.count)
            // Only while the agent's latest session is here: after a failover the replica it
            // moved to owns the flag.
            commits.post { [replica] db in
                try db.execute(sql: "UPDATE agent SET connected = 0, last_seen_ms = ? WHERE name = ? AND replica = ?",
                               arguments: [now, agent, replica])
            }
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

    mutating func started(version: String, held: Int) async throws {
        try await presence.sessionStarted(agent: agent, version: version)
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
