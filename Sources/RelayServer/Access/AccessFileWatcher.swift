import ArtifactMirror
import Foundation
import Logging

/// Applies the access file (relay.yaml `access:`) from each new revision of its Git source.
///
/// A valid file takes effect at once: grants are replaced in one transaction, which bumps the
/// access version, so sessions whose grants changed are sent to reconnect (`LiveSessions`)
/// and an agent that lost a source is neither offered nor served it any more. An invalid file
/// changes nothing: the last good one stays, and the commit gets a `failed` GitLab status
/// naming the file, the field and the reason (a valid one gets `success`).
public actor AccessFileWatcher {
    public struct Settings: Sendable, Equatable {
        public var source: String
        public var path: String
    }

    let settings: Settings
    let sources: Set<String>
    let gitlab: ResolvedServerConfig.GitLabTarget?
    let registry: Registry
    let hub: DesiredStateHub
    let store: ArtifactStore
    let logger: Logger
    private var processed: String?

    public init(settings: Settings, config: ResolvedServerConfig, registry: Registry, hub: DesiredStateHub, store: ArtifactStore, logger: Logger) {
        self.settings = settings
        sources = Set(config.sources.map(\.name))
        gitlab = config.sources.first { $0.name == settings.source }?.gitlab
        self.registry = registry
        self.hub = hub
        self.store = store
        self.logger = logger
    }

    /// At start, before agents are served: the last applied file again (relay.yaml's agents
    /// were just synchronised over its grants).
    public func reapply() async throws {
        guard let stored = try await registry.appliedAccessFile() else { return }
        processed = stored.digest
        guard let file = try? JSONDecoder().decode(AccessFile.self, from: Data(stored.content.utf8)) else { return }
        try await registry.applyAccessFile(file, source: settings.source, revision: stored.revision, digest: stored.digest)
    }

    public func run() async {
        while !Task.isCancelled {
            if let artifact = await hub.artifact(forSource: settings.source), artifact.digest != processed {
                do {
                    try await process(artifact)
                    processed = artifact.digest
                } catch {
                    logger.error("cannot apply the access file; retrying", metadata: ["error": "\(error)"])
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    func process(_ artifact: PackagedArtifact) async throws {
        // Never an older revision over a newer one (a replica that is behind).
        if let applied = try await registry.appliedAccessFile(), applied.digest != artifact.digest,
           let previous = try await registry.artifact(digest: applied.digest, amongSources: [settings.source]),
           previous.createdAt > artifact.createdAt {
            return
        }
        let outcome: Result<AccessFile, AccessFile.Invalid>
        do {
            outcome = .success(try await parse(artifact))
        } catch let invalid as AccessFile.Invalid {
            outcome = .failure(invalid)
        }
        switch outcome {
        case .success(let file):
            try await registry.applyAccessFile(file, source: settings.source, revision: artifact.revision, digest: artifact.digest)
            RelayMetrics.accessFileApplied.increment()
            logger.notice("access file applied", metadata: [
                "file": "\(settings.path)", "revision": "\(artifact.revision)", "agents": "\(file.agents.count)"])
            try await postStatus(artifact, state: "success", description: "\(settings.path) applied: \(file.agents.count) agents")
        case .failure(let invalid):
            RelayMetrics.accessFileRefused.increment()
            logger.error("access file refused; the last good one stays in force", metadata: [
                "revision": "\(artifact.revision)", "error": "\(invalid)"])
            try await postStatus(artifact, state: "failed", description: "\(invalid)")
        }
    }

    private func parse(_ artifact: PackagedArtifact) async throws -> AccessFile {
        let found: Data?
        do { found = try ArtifactFiles.read(path: store.path(forDigest: artifact.digest).path, file: settings.path) } catch {
            throw AccessFile.Invalid(file: settings.path, field: "", reason: "cannot read it: \(error)")
        }
        guard let data = found else {
            throw AccessFile.Invalid(file: settings.path, field: "", reason: "not in \(artifact.revision) (or left out by ignore rules)")
        }
        let agents = try await registry.agentTokens()
        let known = Set(agents.filter { !$0.tokens.isEmpty && $0.managedBy != "git" }.map(\.name))
        let file = try AccessFile.parse(String(decoding: data, as: UTF8.self), file: settings.path, sources: sources, knownAgents: known)
        // A token hash may name one agent only (the registry's key): refused here, not at apply.
        let others = try await registry.tokenOwners()
        for (index, agent) in file.agents.enumerated() {
            guard let token = agent.tokenSHA256 else { continue }
            if let owner = others[token], owner != agent.name, agents.first(where: { $0.name == owner })?.managedBy != "git" || file.agents.contains(where: { $0.name == owner }) {
                throw AccessFile.Invalid(file: settings.path, field: "agents[\(index)].tokenSHA256", reason: "this token is already agent '\(owner)''s")
            }
            if file.agents[..<index].contains(where: { $0.tokenSHA256 == token }) {
                throw AccessFile.Invalid(file: settings.path, field: "agents[\(index)].tokenSHA256", reason: "two agents share this token; give each its own")
            }
        }
        return file
    }

    private func postStatus(_ artifact: PackagedArtifact, state: String, description: String) async throws {
        guard let gitlab, let sha = Notifier.commit(of: artifact.revision) else { return }
        let item = Notifier.commitStatus(gitlab, source: settings.source, sha: sha, revision: artifact.revision, state: state,
                                         name: "relay/access", description: description, targetURL: nil)
        try await registry.store.write { db in try Notifier.enqueue(db, item) }
    }
}

extension Registry {
    public func appliedAccessFile() async throws -> (revision: String, digest: String, content: String)? {
        try await store.read { db in
            try SQLRow.fetchOne(db, sql: "SELECT revision, digest, content FROM access_file WHERE id = 1").map {
                ($0["revision"], $0["digest"], $0["content"])
            }
        }
    }

    /// The access file's grants, in one transaction: named agents get exactly its sources (and
    /// are created, managed by `git`, when it gives their token); agents it does not name keep
    /// no grant; `git`-managed agents it no longer names are removed.
    public func applyAccessFile(_ file: AccessFile, source: String, revision: String, digest: String) async throws {
        let content = String(decoding: try JSONEncoder().encode(file), as: UTF8.self)
        try await store.write { db in
            var grants: [String: Set<String>] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, source FROM grant_") { grants[row["agent"] as String, default: []].insert(row["source"]) }
            var managers: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT name, managed_by FROM agent") { managers[row["name"]] = row["managed_by"] as String }
            let named = Set(file.agents.map(\.name))
            for (agent, manager) in managers where !named.contains(agent) {
                if manager == "git" {
                    try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [agent])
                    try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [agent])
                    try db.execute(sql: "DELETE FROM agent WHERE name = ?", arguments: [agent])
                } else if !(grants[agent] ?? []).isEmpty {
                    try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [agent])
                }
            }
            for agent in file.agents {
                if managers[agent.name] == nil {
                    try db.execute(sql: "INSERT INTO agent(name, managed_by) VALUES (?, 'git')", arguments: [agent.name])
                }
                if let token = agent.tokenSHA256, managers[agent.name] == nil || managers[agent.name] == "git" {
                    let current = try SQLRow.fetchAll(db, sql: "SELECT token_sha256 FROM agent_token WHERE agent = ?", arguments: [agent.name])
                        .map { $0["token_sha256"] as String }
                    if current != [token] {
                        try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [agent.name])
                        try db.execute(sql: "INSERT INTO agent_token(token_sha256, agent, created_ms) VALUES (?, ?, ?)",
                                       arguments: [token, agent.name, Self.milliseconds(Date())])
                    }
                }
                if grants[agent.name] ?? [] != Set(agent.sources) {
                    try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [agent.name])
                    for granted in Set(agent.sources).sorted() {
                        try db.execute(sql: "INSERT INTO grant_(agent, source) VALUES (?, ?)", arguments: [agent.name, granted])
                    }
                }
            }
            try db.execute(sql: "DELETE FROM agent_environment")
            for agent in file.agents {
                if let environment = agent.environment {
                    try db.execute(sql: "INSERT INTO agent_environment(agent, environment) VALUES (?, ?)", arguments: [agent.name, environment])
                }
            }
            try db.execute(sql: """
                INSERT INTO access_file(id, source, revision, digest, content, applied_ms) VALUES (1, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET source = excluded.source, revision = excluded.revision, digest = excluded.digest,
                  content = excluded.content, applied_ms = excluded.applied_ms
                """, arguments: [source, revision, digest, content, Self.milliseconds(Date())])
        }
    }

    /// Agent → environment, as the access file names them.
    public func agentEnvironments() async throws -> [String: String] {
        try await store.read { db in
            var result: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, environment FROM agent_environment") { result[row["agent"]] = row["environment"] }
            return result
        }
    }
}

extension Registry {
    /// Token hash → agent, for every token.
    func tokenOwners() async throws -> [String: String] {
        try await store.read { db in
            var result: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT token_sha256, agent FROM agent_token") { result[row["token_sha256"]] = row["agent"] }
            return result
        }
    }
}
