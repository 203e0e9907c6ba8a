import ArtifactMirror
import Foundation
import RelayShared

// relay.yaml's rollout governance: `freezes:`, `admins:`, and per source `rollout:` and
// `gitlab.environments` / `gitlab.freezePeriods`. Every field is in the README.

extension ServerConfig {
    /// A deploy freeze: while `start`…`end` (cron, in `timeZone`) is open, new revisions are
    /// held for the agents it covers.
    public struct Freeze: Sendable, Decodable {
        public var name: String?
        public var start: String
        public var end: String
        /// IANA time zone of the cron expressions (default UTC), as GitLab's `cron_timezone`.
        public var timeZone: String?
        /// Agents covered, by name or glob; with `environments`, either may match. Neither: every agent.
        public var agents: [String]?
        /// GitLab environment names (or globs) covered, from the sources' `gitlab.environments`.
        public var environments: [String]?
    }

    /// Waves a new revision goes through, one after the other.
    public struct Rollout: Sendable, Decodable {
        public struct Wave: Sendable, Decodable {
            public var agents: [String]
            /// How long the wave must stay healthy before the next starts (default 0).
            public var soak: ConfigDuration?
        }
        public var waves: [Wave]
        /// On a failure, give the failed wave back the last revision that was healthy everywhere.
        public var rollbackOnFailure: Bool?
    }

    /// A GitLab environment the agents matching `agents` deploy to.
    public struct Environment: Sendable, Decodable {
        public var agents: [String]
        /// e.g. `production/eu-1`; `{agent}` is replaced by the agent's name.
        public var name: String
        public var tier: String?
        public var clusterAgentID: Int?
        public var kubernetesNamespace: String?
        public var fluxResourcePath: String?
    }
}

/// The resolved rollout rules.
public struct RolloutPolicy: Sendable, Equatable {
    public struct Wave: Sendable, Equatable {
        public var agents: [String]
        public var soak: Duration
    }
    public var waves: [Wave]
    public var rollbackOnFailure: Bool

    /// The wave `agent` belongs to: the first whose patterns match; an agent no wave names
    /// goes with the last wave.
    public func wave(of agent: String) -> Int {
        waves.firstIndex { AgentPattern.matches($0.agents, agent) } ?? max(0, waves.count - 1)
    }
}

/// A resolved `freezes[]` entry.
public struct FreezeRule: Sendable, Equatable {
    public var name: String
    public var window: FreezeWindow
    public var agents: [String]
    public var environments: [String]

    /// Whether the freeze covers `agent`, which deploys to `environment` (nil: none mapped).
    public func covers(agent: String, environment: String?) -> Bool {
        if agents.isEmpty && environments.isEmpty { return true }
        if AgentPattern.matches(agents, agent) { return true }
        if let environment, AgentPattern.matches(environments, environment) { return true }
        return false
    }
}

/// A resolved `gitlab.environments[]` entry.
public struct EnvironmentRule: Sendable, Equatable {
    public var agents: [String]
    public var name: String
    public var tier: String?
    public var clusterAgentID: Int?
    public var kubernetesNamespace: String?
    public var fluxResourcePath: String?

    /// The environment name for `agent` (`{agent}` replaced).
    public func environment(for agent: String) -> String { name.replacingOccurrences(of: "{agent}", with: agent) }
}

extension [EnvironmentRule] {
    /// The first rule naming `agent`.
    public func rule(for agent: String) -> EnvironmentRule? { first { AgentPattern.matches($0.agents, agent) } }
}

/// Agent names and environment names matched against shell globs (`*`, `?`, `[…]`), as
/// `path/filepath.Match` does (one component: `*` does not cross `/`, so `production/*`
/// names every environment directly under `production`).
public enum AgentPattern {
    public static func matches(_ patterns: [String], _ name: String) -> Bool {
        patterns.contains { GlobMatch.matches($0, name) }
    }

    /// Why `pattern` is not a valid glob, or nil.
    static func problem(_ pattern: String) -> String? {
        if pattern.isEmpty { return "an empty pattern matches nothing" }
        do { _ = try GlobMatch.match(pattern, "") } catch { return "'\(pattern)' is not a valid glob (\(error))" }
        return nil
    }
}

extension ServerConfig {
    static let gitlabTiers: Set<String> = ["production", "staging", "testing", "development", "other"]

    func resolveFreezes(fail: (String, String) -> ConfigError) throws(ConfigError) -> [FreezeRule] {
        var rules: [FreezeRule] = []
        for (index, freeze) in (freezes ?? []).enumerated() {
            let field = "freezes[\(index)]"
            let zoneName = freeze.timeZone ?? "UTC"
            guard let zone = TimeZone(identifier: zoneName) else {
                throw fail("\(field).timeZone", "'\(zoneName)' is not an IANA time zone name, e.g. Europe/Berlin or UTC")
            }
            let start: CronSchedule, end: CronSchedule
            do { start = try CronSchedule(freeze.start) } catch { throw fail("\(field).start", "\(error)") }
            do { end = try CronSchedule(freeze.end) } catch { throw fail("\(field).end", "\(error)") }
            for (list, name) in [(freeze.agents ?? [], "agents"), (freeze.environments ?? [], "environments")] {
                for (i, pattern) in list.enumerated() {
                    if let problem = AgentPattern.problem(pattern) { throw fail("\(field).\(name)[\(i)]", problem) }
                }
            }
            rules.append(FreezeRule(name: freeze.name ?? "freezes[\(index)]", window: FreezeWindow(start: start, end: end, timeZone: zone),
                                    agents: freeze.agents ?? [], environments: freeze.environments ?? []))
        }
        return rules
    }
}

extension ServerConfig {
    func resolveAccess(_ sources: [ResolvedServerConfig.Source], fail: (String, String) -> ConfigError) throws(ConfigError) -> AccessFileWatcher.Settings? {
        guard let access else { return nil }
        guard let source = sources.first(where: { $0.name == access.source }) else {
            throw fail("access.source", "unknown source '\(access.source)': name a Git source from sources:")
        }
        guard source.remote != nil else { throw fail("access.source", "'\(access.source)' is not a Git source (url:)") }
        let path = access.path ?? "relay-access.yaml"
        guard !path.isEmpty, !path.hasPrefix("/"), !path.split(separator: "/").contains(".."), !path.hasSuffix("/") else {
            throw fail("access.path", "expected a file path inside the repository, e.g. relay-access.yaml")
        }
        return .init(source: access.source, path: path)
    }
}

extension ServerConfig.Source {
    func resolveRollout(field: String, fail: (String, String) -> ConfigError) throws(ConfigError) -> RolloutPolicy? {
        guard let rollout else { return nil }
        guard !rollout.waves.isEmpty else { throw fail("\(field).rollout.waves", "list at least one wave, e.g. [{agents: [canary-*]}, {agents: [\"*\"]}]") }
        var waves: [RolloutPolicy.Wave] = []
        for (index, wave) in rollout.waves.enumerated() {
            let waveField = "\(field).rollout.waves[\(index)]"
            guard !wave.agents.isEmpty else { throw fail("\(waveField).agents", "name at least one agent or glob") }
            for (i, pattern) in wave.agents.enumerated() {
                if let problem = AgentPattern.problem(pattern) { throw fail("\(waveField).agents[\(i)]", problem) }
            }
            waves.append(.init(agents: wave.agents, soak: wave.soak?.duration ?? .zero))
        }
        return RolloutPolicy(waves: waves, rollbackOnFailure: rollout.rollbackOnFailure ?? false)
    }

    func resolveEnvironments(field: String, fail: (String, String) -> ConfigError) throws(ConfigError) -> [EnvironmentRule] {
        var rules: [EnvironmentRule] = []
        for (index, environment) in (gitlab?.environments ?? []).enumerated() {
            let envField = "\(field).gitlab.environments[\(index)]"
            guard !environment.agents.isEmpty else { throw fail("\(envField).agents", "name at least one agent or glob") }
            for (i, pattern) in environment.agents.enumerated() {
                if let problem = AgentPattern.problem(pattern) { throw fail("\(envField).agents[\(i)]", problem) }
            }
            let name = environment.name.trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.count <= 255 else { throw fail("\(envField).name", "expected a GitLab environment name, e.g. production/eu-1") }
            if let tier = environment.tier, !ServerConfig.gitlabTiers.contains(tier) {
                throw fail("\(envField).tier", "'\(tier)' is not one of GitLab's tiers: production, staging, testing, development, other")
            }
            if environment.fluxResourcePath != nil || environment.kubernetesNamespace != nil, environment.clusterAgentID == nil {
                throw fail("\(envField).clusterAgentID", "kubernetesNamespace and fluxResourcePath need the GitLab cluster agent's id")
            }
            if environment.fluxResourcePath != nil, environment.kubernetesNamespace == nil {
                throw fail("\(envField).kubernetesNamespace", "fluxResourcePath needs the namespace too (GitLab refuses it without one)")
            }
            if let path = environment.fluxResourcePath, path.split(separator: "/").count < 5 {
                throw fail("\(envField).fluxResourcePath",
                           "expected a full resource path, e.g. kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/app")
            }
            rules.append(.init(agents: environment.agents, name: name, tier: environment.tier, clusterAgentID: environment.clusterAgentID,
                               kubernetesNamespace: environment.kubernetesNamespace, fluxResourcePath: environment.fluxResourcePath))
        }
        return rules
    }
}
