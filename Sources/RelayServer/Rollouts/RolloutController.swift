import Foundation
import Logging

/// Governs what each agent of a source with rollout rules (waves, freezes) is given.
///
/// Once a second, and at once when poked (a new revision, new status, a release), it reads
/// what the registry knows of each governed source, runs the `RolloutPlanner`, stores the
/// rollout's progress and each agent's assignment, and hands the assignments to the hub. It
/// queues the notifications a rollout calls for: a halt (Slack, webhooks), and a `pending`
/// GitLab commit status, saying why and until when, for each agent a revision is held from.
public actor RolloutController {
    public struct Source: Sendable {
        public var name: String
        public var policy: RolloutPolicy?
        public var gitlab: ResolvedServerConfig.GitLabTarget?
    }

    let sources: [Source]
    let freezes: [FreezeRule]
    let registry: Registry
    let hub: DesiredStateHub
    let notifications: ResolvedServerConfig.Notifications
    let publicURL: String?
    let clock: RelayClock
    let logger: Logger
    /// This process among replicas: only the one holding the governor lease writes rollouts;
    /// the others serve the assignments it stored.
    let replica: String
    private var views: [String: RolloutView] = [:]
    /// Digest → artifact, for what assignments name.
    private var artifacts: [String: PackagedArtifact] = [:]
    private var gitlabFreezes: [String: (json: String, rules: [FreezeRule])] = [:]
    /// Per source: the newest delivery to each agent, kept up to date from the delivery rows
    /// after `row` (read once, then only what is new: a pass over 10,000 agents no longer
    /// asks the database for every unassigned agent each second).
    private var delivered: [String: (row: Int64, latest: [String: (at: Int64, digest: String)])] = [:]
    private let wake: AsyncStream<Void>
    private let poker: AsyncStream<Void>.Continuation

    /// Sources that need a controller: with waves, freezes that can cover them, or GitLab freeze periods.
    public static func governed(_ config: ResolvedServerConfig) -> [Source] {
        config.sources.filter { $0.rollout != nil || !config.freezes.isEmpty || $0.gitlab?.freezePeriodsInterval != nil }
            .map { Source(name: $0.name, policy: $0.rollout, gitlab: $0.gitlab) }
    }

    public init(sources: [Source], freezes: [FreezeRule], registry: Registry, hub: DesiredStateHub,
                notifications: ResolvedServerConfig.Notifications, publicURL: String?, clock: RelayClock = .system, replica: String = "",
                logger: Logger) {
        self.replica = replica
        self.sources = sources
        self.freezes = freezes
        self.registry = registry
        self.hub = hub
        self.notifications = notifications
        self.publicURL = publicURL
        self.clock = clock
        self.logger = logger
        (wake, poker) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a pass soon (coalesced).
    public nonisolated func poke() { poker.yield() }

    public func run() async {
        guard !sources.isEmpty else { return }
        await withDiscardingTaskGroup { group in
            group.addTask { [poker] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    poker.yield()
                }
            }
            group.addTask {
                for await _ in self.wake {
                    await self.pass()
                    if Task.isCancelled { break }
                }
            }
        }
    }

    /// One pass over every governed source.
    public func pass() async {
        // One writer among replicas: a lease renewed every pass (SQLite: always this process).
        let governing: Bool
        do { governing = try await registry.claimRolloutGovernor(replica: replica, lease: .seconds(5)) } catch {
            logger.error("cannot read the rollout governor lease; retrying", metadata: ["error": "\(error)"])
            return
        }
        for source in sources {
            do { try await govern(source, writes: governing) } catch {
                logger.error("rollout pass failed; retrying", metadata: ["source": "\(source.name)", "error": "\(error)"])
            }
        }
        RelayMetrics.rolloutHeld.record(views.values.reduce(0) { sum, view in sum + view.agents.filter { $0.hold != nil }.count })
    }

    public func view(source: String) -> RolloutView? { views[source] }

    // MARK: - One source

    /// `writes`: this process governs (stores progress, notifies); otherwise it only serves
    /// the assignments the governing replica stored.
    private func govern(_ source: Source, writes: Bool) async throws {
        guard let latest = await hub.artifact(forSource: source.name) else { return }
        artifacts[latest.digest] = latest
        let now = clock.now()
        let agents = try await registry.grantedAgents(source: source.name)
        let record = try await registry.rollout(source: source.name)
        let assigned = try await registry.rolloutAssignments(source: source.name)
        let objects = try await registry.fluxObjects(source: source.name)
        let releases = try await registry.releases(source: source.name, digest: latest.digest)
        let environments = source.gitlab?.environments ?? []
        let rules = freezes + (try await gitlabFreezeRules(source))
        // The access file's environments first, then the source's gitlab.environments.
        let named = rules.isEmpty ? [:] : try await registry.agentEnvironments()
        // Each window's state once per pass; then which open ones cover each agent.
        let open = rules.compactMap { rule -> (FreezeRule, RolloutHold)? in
            let state = rule.window.state(at: now)
            guard state.frozen else { return nil }
            let until = state.until.map { RolloutView.localTime($0, rule.window.timeZone) } ?? "its end"
            return (rule, RolloutHold(kind: .freeze, reason: "deploy freeze '\(rule.name)' until \(until)", until: state.until))
        }
        var frozen: [String: RolloutHold] = [:]
        if !open.isEmpty {
            for agent in agents {
                let environment = named[agent] ?? environments.rule(for: agent)?.environment(for: agent)
                if let hold = open.first(where: { $0.0.covers(agent: agent, environment: environment) })?.1 { frozen[agent] = hold }
            }
        }
        let inputs = RolloutPlanner.Inputs(
            latest: latest, record: record, policy: source.policy, agents: agents, objects: objects, assigned: assigned,
            delivered: try await deliveries(source.name).filter { assigned[$0.key] == nil },
            frozen: frozen, released: Set(releases.keys), now: now)
        let plan = RolloutPlanner.plan(inputs)
        views[source.name] = RolloutView(source: source, latest: latest, plan: plan, agents: agents, objects: objects,
                                         environments: environments, releases: releases, artifacts: artifacts)
        guard writes else {
            // Another replica governs: serve what it stored.
            var stored: [String: PackagedArtifact] = [:]
            for (agent, digest) in assigned {
                if let artifact = try await artifact(digest, source: source.name) { stored[agent] = artifact }
            }
            await hub.assign(source: source.name, stored)
            return
        }
        if let failed = plan.newlyHalted {
            // Queued before the halt is stored: a failure between the two announces it twice
            // rather than never.
            logger.warning("rollout halted", metadata: ["source": "\(source.name)", "revision": "\(latest.revision)",
                                                        "agent": "\(failed)", "message": "\(plan.record.message)"])
            RelayMetrics.rolloutsHalted.increment()
            try await notifyHalt(source: source.name, record: plan.record)
        }
        if plan.record != record {
            try await registry.saveRollout(plan.record)
            if record?.digest != plan.record.digest {
                logger.info("rollout started", metadata: ["source": "\(source.name)", "revision": "\(latest.revision)"])
            } else if record?.wave != plan.record.wave || record?.state != plan.record.state {
                logger.info("rollout progressed", metadata: [
                    "source": "\(source.name)", "revision": "\(latest.revision)", "state": "\(plan.record.state.rawValue)",
                    "wave": "\(min(plan.record.wave + 1, (source.policy?.waves.count ?? 1)))"])
            }
        }
        try await registry.saveRolloutAssignments(source: source.name, plan.given.filter { assigned[$0.key] != $0.value })
        var given: [String: PackagedArtifact] = [:]
        for (agent, digest) in plan.given {
            if let artifact = try await artifact(digest, source: source.name) { given[agent] = artifact }
        }
        await hub.assign(source: source.name, given)
        try await postHeldStatuses(source, latest: latest, plan: plan, releases: releases)
    }

    /// Agent → digest of its newest delivery of `source`.
    private func deliveries(_ source: String) async throws -> [String: String] {
        var known = delivered[source] ?? (0, [:])
        while true {
            let rows = try await registry.deliveries(source: source, afterRow: known.row)
            for row in rows where (known.latest[row.agent]?.at ?? .min) <= row.at { known.latest[row.agent] = (row.at, row.digest) }
            known.row = rows.last?.row ?? known.row
            if rows.count < 10_000 { break }
        }
        delivered[source] = known
        return known.latest.mapValues(\.digest)
    }

    private func artifact(_ digest: String, source: String) async throws -> PackagedArtifact? {
        if let known = artifacts[digest] { return known }
        let found = try await registry.artifact(digest: digest, amongSources: [source])
        if let found { artifacts[digest] = found }
        return found
    }

    /// The freeze periods last read from the source's GitLab project, as rules for every agent.
    private func gitlabFreezeRules(_ source: Source) async throws -> [FreezeRule] {
        guard source.gitlab?.freezePeriodsInterval != nil, let stored = try await registry.gitlabFreezes(source: source.name) else { return [] }
        if let cached = gitlabFreezes[source.name], cached.json == stored.json { return cached.rules }
        let rules = GitLabFreezePeriods.rules(json: stored.json, logger: logger)
        gitlabFreezes[source.name] = (stored.json, rules)
        return rules
    }

    // MARK: - Notifications

    private func notifyHalt(source: String, record: RolloutRecord) async throws {
        let text = ":octagonal_sign: rollout of \(source) \(record.revision) halted: \(record.failedAgent) failed: \(record.message)"
        let queued = Notifier.broadcast(notifications, text: text, event: [
            "type": "rollout-halted", "source": source, "revision": record.revision, "agent": record.failedAgent,
            "message": record.message, "at": StatusRecord.timestamp(record.updatedAt),
        ])
        guard !queued.isEmpty else { return }
        try await registry.store.write { db in for item in queued { try Notifier.enqueue(db, item) } }
    }

    /// `pending` on the commit for each agent the newest revision is held from (why, until
    /// when), and `success` ("delivered") once it is given; each said once.
    private func postHeldStatuses(_ source: Source, latest: PackagedArtifact, plan: RolloutPlanner.Plan,
                                  releases: [String: RolloutRelease]) async throws {
        guard let gitlab = source.gitlab, let sha = Notifier.commit(of: latest.revision) else { return }
        let posted = try await registry.rolloutStatuses(source: source.name)
        var said: [String: String] = [:]
        var items: [Notifier.Item] = []
        for agent in Set(plan.given.keys).union(plan.holds.keys) {
            let state: String, description: String
            if plan.given[agent] == latest.digest {
                // Only where a hold was said before.
                guard let before = posted[agent], before.hasPrefix("\(sha)\u{0}pending") else { continue }
                state = "success"
                description = releases[agent].map { "released to \(agent) during a freeze by \($0.by): \($0.reason)" } ?? "delivered to \(agent)"
            } else if let hold = plan.holds[agent] {
                state = "pending"
                description = "held for \(agent): \(hold.reason)"
            } else { continue }
            let text = "\(sha)\u{0}\(state)\u{0}\(description)"
            guard posted[agent] != text else { continue }
            said[agent] = text
            items.append(Notifier.commitStatus(gitlab, source: source.name, sha: sha, revision: latest.revision, state: state,
                                               name: "relay/\(agent)/rollout", description: description, targetURL: publicURL))
        }
        guard !items.isEmpty else { return }
        let queued = items, name = source.name, remembered = said
        try await registry.store.write { db in
            for item in queued { try Notifier.enqueue(db, item) }
            for (agent, text) in remembered {
                try db.execute(sql: """
                    INSERT INTO rollout_status(source, agent, said) VALUES (?, ?, ?)
                    ON CONFLICT(source, agent) DO UPDATE SET said = excluded.said
                    """, arguments: [name, agent, text])
            }
        }
    }
}

/// A governed source's rollout as the API and the page show it.
public struct RolloutView: Sendable, Codable {
    public struct Wave: Sendable, Codable {
        public var number: Int
        public var agents: [String]
        public var soakSeconds: Double
        /// pending | rolling | soaking | done | failed
        public var state: String
    }
    public struct Agent: Sendable, Codable {
        public var agent: String
        public var wave: Int
        public var environment: String?
        /// The revision it is given now ("" for none).
        public var revision: String
        public var digest: String
        /// Of the newest revision: held | healthy | failed | progressing | pending
        public var state: String
        public var hold: RolloutHold?
        public var message: String
        public var release: RolloutRelease?
    }
    public var source: String
    public var revision: String
    public var digest: String
    public var state: RolloutRecord.State
    /// 1-based; waves.count + 1 once complete.
    public var wave: Int
    public var failedAgent: String
    public var message: String
    public var startedAt: Date
    public var updatedAt: Date
    public var waves: [Wave]
    public var agents: [Agent]

    init(source: RolloutController.Source, latest: PackagedArtifact, plan: RolloutPlanner.Plan, agents: [String],
         objects: [FluxObjectState], environments: [EnvironmentRule], releases: [String: RolloutRelease],
         artifacts: [String: PackagedArtifact]) {
        let record = plan.record
        let policyWaves = source.policy?.waves ?? [.init(agents: ["*"], soak: .zero)]
        func waveOf(_ agent: String) -> Int { plan.waves[agent] ?? source.policy?.wave(of: agent) ?? 0 }
        let members = Dictionary(grouping: agents, by: waveOf)
        self.source = source.name
        revision = latest.revision
        digest = latest.digest
        state = record.state
        wave = record.wave + 1
        failedAgent = record.failedAgent
        message = record.message
        startedAt = record.startedAt
        updatedAt = record.updatedAt
        let failedWave = record.state == .halted ? waveOf(record.failedAgent) : nil
        waves = policyWaves.enumerated().map { index, wave in
            let state: String
            if let failedWave, index == failedWave { state = "failed" } else if record.state == .complete || index < record.wave {
                state = "done"
            } else if index == record.wave && record.state == .rolling {
                state = record.waveHealthyAt == nil ? "rolling" : "soaking"
            } else { state = "pending" }
            return Wave(number: index + 1, agents: members[index] ?? [], soakSeconds: wave.soak.seconds, state: state)
        }
        let byAgent = Dictionary(grouping: objects, by: \.agent)
        self.agents = agents.map { agent in
            let given = plan.given[agent]
            let (health, why) = RevisionHealth.of(latest.revision, objects: byAgent[agent] ?? [])
            let hold = plan.holds[agent]
            let state = given == latest.digest ? (health == .unknown ? "pending" : health.rawValue) : (hold != nil ? "held" : "pending")
            return Agent(agent: agent, wave: waveOf(agent) + 1, environment: environments.rule(for: agent)?.environment(for: agent),
                         revision: given.flatMap { artifacts[$0]?.revision } ?? "", digest: given ?? "", state: state, hold: hold,
                         message: why, release: releases[agent])
        }
    }

    /// A date as wall time in a zone, e.g. `2026-12-07T07:00:00+01:00 (Europe/Berlin)`.
    static func localTime(_ date: Date, _ zone: TimeZone) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = zone
        formatter.formatOptions = [.withInternetDateTime]
        return "\(formatter.string(from: date)) (\(zone.identifier))"
    }
}
