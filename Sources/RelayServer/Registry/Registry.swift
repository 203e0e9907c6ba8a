import Foundation
import GRDB

/// One packaged revision of a source, as the relay offers it to agents.
public struct PackagedArtifact: Sendable, Hashable, Codable {
    public var source: String
    public var revision: String
    public var digest: String
    public var size: UInt64
    public var commit: String
    /// The remote without credentials.
    public var origin: String
    public var createdAt: Date

    public init(source: String, revision: String, digest: String, size: UInt64, commit: String, origin: String, createdAt: Date) {
        self.source = source
        self.revision = revision
        self.digest = digest
        self.size = size
        self.commit = commit
        self.origin = origin
        self.createdAt = createdAt
    }
}

/// An artifact an agent has verified and published.
public struct Delivery: Sendable, Hashable, Codable {
    public var agent: String
    public var source: String
    public var revision: String
    public var digest: String
    public var deliveredAt: Date
}

/// The relay's durable record in SQLite (`<dataDir>/relay.sqlite`): agents and their token
/// hashes, grants, every packaged revision, and deliveries. A restart forgets nothing.
public final class Registry: Sendable {
    /// WAL: readers (API, stream) run beside the writer instead of waiting for it.
    let database: DatabasePool

    public init(path: URL) throws {
        try FileManager.default.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        // WAL (a DatabasePool sets it): one fsync per transaction (status batches arrive many
        // times a second), and readers never wait for the writer.
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        database = try DatabasePool(path: path.path, configuration: configuration)
        try Self.migrator.migrate(database)
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE agent (
                    name TEXT PRIMARY KEY,
                    token_sha256 TEXT NOT NULL,
                    version TEXT,
                    last_seen_ms INTEGER,
                    connected INTEGER NOT NULL DEFAULT 0
                );
                CREATE TABLE grant_ (
                    agent TEXT NOT NULL REFERENCES agent(name) ON DELETE CASCADE,
                    source TEXT NOT NULL,
                    PRIMARY KEY (agent, source)
                );
                CREATE TABLE revision (
                    source TEXT NOT NULL,
                    revision TEXT NOT NULL,
                    digest TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    commit_ TEXT NOT NULL,
                    origin TEXT NOT NULL,
                    created_ms INTEGER NOT NULL,
                    PRIMARY KEY (source, digest)
                );
                CREATE INDEX revision_by_time ON revision(source, created_ms);
                CREATE TABLE delivery (
                    agent TEXT NOT NULL,
                    source TEXT NOT NULL,
                    revision TEXT NOT NULL,
                    digest TEXT NOT NULL,
                    delivered_ms INTEGER NOT NULL,
                    PRIMARY KEY (agent, digest)
                );
                """)
        }
        migrator.registerMigration("v2-status") { db in
            // Every status entry agents sent, once: `id` is the relay-wide feed position.
            try db.execute(sql: """
                CREATE TABLE status_entry (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    agent TEXT NOT NULL,
                    journal TEXT NOT NULL,
                    sequence INTEGER NOT NULL,
                    observed_ms INTEGER NOT NULL,
                    received_ms INTEGER NOT NULL,
                    type TEXT NOT NULL,
                    kind TEXT, namespace TEXT, name TEXT,
                    state TEXT, revision TEXT, source TEXT,
                    payload TEXT NOT NULL,
                    UNIQUE (agent, journal, sequence)
                );
                CREATE INDEX status_entry_by_agent ON status_entry(agent, id);
                CREATE INDEX status_entry_by_source ON status_entry(source, id);
                -- The latest state of each Flux object on each agent.
                CREATE TABLE flux_object (
                    agent TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                    state TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL,
                    revision_applied TEXT NOT NULL, revision_attempted TEXT NOT NULL, source TEXT NOT NULL,
                    last_transition_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, entry_id INTEGER NOT NULL,
                    PRIMARY KEY (agent, kind, namespace, name)
                );
                """)
        }
        migrator.registerMigration("v3-notifications") { db in
            try db.execute(sql: """
                -- How far each notifier has read the status feed.
                CREATE TABLE notifier_cursor (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
                -- Notifications waiting to be sent (or retried), oldest first per target.
                CREATE TABLE outbox (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    target TEXT NOT NULL,
                    url TEXT NOT NULL,
                    body TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_ms INTEGER NOT NULL,
                    last_error TEXT,
                    created_ms INTEGER NOT NULL
                );
                CREATE INDEX outbox_by_target ON outbox(target, id);
                -- What was last reported per Flux object: its health, and the commit status.
                CREATE TABLE notify_state (
                    agent TEXT NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                    health TEXT NOT NULL DEFAULT '', gitlab_state TEXT NOT NULL DEFAULT '', gitlab_sha TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (agent, kind, namespace, name)
                );
                """)
        }
        registerTokenMigration(&migrator)
        registerAgentKeyMigration(&migrator)
        registerBundleExportMigration(&migrator)
        registerAccessMigration(&migrator)
        migrator.registerMigration("v10-agent-token-by-agent") { db in
            // Tokens are looked up, replaced and removed by agent (rotation, revocation, sync).
            try db.execute(sql: "CREATE INDEX agent_token_by_agent ON agent_token(agent)")
        }
        return migrator
    }

    /// Makes the config-managed agents, their grants and tokens match relay.yaml (agents no
    /// longer configured are removed with their grants and tokens; their delivery history
    /// stays). Agents created with `relay-server agents` are left alone.
    public func syncAgents(_ agents: [(name: String, tokenSHA256: String, sources: [String])]) throws {
        // Writes only what differs: a restart with an unchanged relay.yaml writes nothing here
        // but the connected flags. (Rewriting every agent, grant and token, each a statement
        // with its access trigger, took ~4 s of a 10,000-agent relay's start, while the fleet
        // waited to reconnect: Benchmarks/fleet_bench.py phase d, perf.)
        try database.write { db in
            var managedBy: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT name, managed_by FROM agent") { managedBy[row["name"]] = row["managed_by"] as String }
            var tokens: [String: Set<String>] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT agent, token_sha256 FROM agent_token") {
                tokens[row["agent"] as String, default: []].insert(row["token_sha256"])
            }
            var grants: [String: Set<String>] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT agent, source FROM grant_") { grants[row["agent"] as String, default: []].insert(row["source"]) }

            let configured = Set(agents.map(\.name))
            for (name, manager) in managedBy where manager == "config" && !configured.contains(name) {
                try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM agent WHERE name = ?", arguments: [name])
            }
            for agent in agents {
                if managedBy[agent.name] != "config" {
                    try db.cachedStatement(sql: """
                        INSERT INTO agent(name, managed_by) VALUES (?, 'config')
                        ON CONFLICT(name) DO UPDATE SET managed_by = 'config'
                        """).execute(arguments: [agent.name])
                }
                if grants[agent.name] ?? [] != Set(agent.sources) {
                    try db.cachedStatement(sql: "DELETE FROM grant_ WHERE agent = ?").execute(arguments: [agent.name])
                    for source in Set(agent.sources) {
                        try db.cachedStatement(sql: "INSERT INTO grant_(agent, source) VALUES (?, ?)").execute(arguments: [agent.name, source])
                    }
                }
                if tokens[agent.name] ?? [] != [agent.tokenSHA256] {
                    try db.cachedStatement(sql: "DELETE FROM agent_token WHERE agent = ?").execute(arguments: [agent.name])
                    try db.cachedStatement(sql: "INSERT INTO agent_token(token_sha256, agent, created_ms) VALUES (?, ?, 0)")
                        .execute(arguments: [agent.tokenSHA256, agent.name])
                }
            }
            try db.execute(sql: "UPDATE agent SET connected = 0 WHERE connected != 0")
        }
    }

    /// Records a packaged revision (idempotent).
    public func record(_ artifact: PackagedArtifact) throws {
        try database.write { db in
            try db.execute(sql: """
                INSERT INTO revision(source, revision, digest, size, commit_, origin, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(source, digest) DO UPDATE SET revision = excluded.revision, created_ms = excluded.created_ms
                """, arguments: [artifact.source, artifact.revision, artifact.digest, Int64(artifact.size), artifact.commit,
                                 artifact.origin, Self.milliseconds(artifact.createdAt)])
        }
    }

    /// The newest packaged artifact of every source.
    public func latestArtifacts() async throws -> [String: PackagedArtifact] {
        try await database.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT r.* FROM revision r
                JOIN (SELECT source, MAX(created_ms) AS newest FROM revision GROUP BY source) n
                  ON r.source = n.source AND r.created_ms = n.newest
                """)
            var result: [String: PackagedArtifact] = [:]
            for row in rows {
                let artifact = Self.artifact(row)
                result[artifact.source] = artifact
            }
            return result
        }
    }

    /// Every revision ever packaged for a source, newest first.
    public func revisions(source: String) throws -> [PackagedArtifact] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM revision WHERE source = ? ORDER BY created_ms DESC", arguments: [source])
                .map(Self.artifact)
        }
    }

    /// Whether any revision with this digest is recorded for one of `sources` (the newest).
    public func digestBelongs(_ digest: String, toAnyOf sources: [String]) throws -> PackagedArtifact? {
        try database.read { db in try Self.newestRevision(db, digest: digest, sources: sources) }
    }

    /// `digestBelongs`, read off the cooperative pool (the tunnel's calls).
    public func artifact(digest: String, amongSources sources: [String]) async throws -> PackagedArtifact? {
        try await database.read { db in try Self.newestRevision(db, digest: digest, sources: sources) }
    }

    private static func newestRevision(_ db: Database, digest: String, sources: [String]) throws -> PackagedArtifact? {
        guard !sources.isEmpty else { return nil }
        return try Row.fetchOne(db, sql: """
            SELECT * FROM revision WHERE digest = ? AND source IN (\(sources.map { _ in "?" }.joined(separator: ",")))
            ORDER BY created_ms DESC LIMIT 1
            """, arguments: StatementArguments([digest] + sources)).map(artifact)
    }

    public func recordDelivery(agent: String, source: String, revision: String, digest: String) throws {
        try database.write { db in
            try db.execute(sql: """
                INSERT INTO delivery(agent, source, revision, digest, delivered_ms) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(agent, digest) DO NOTHING
                """, arguments: [agent, source, revision, digest, Self.milliseconds(Date())])
        }
    }

    public func deliveries(agent: String) throws -> [Delivery] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM delivery WHERE agent = ? ORDER BY delivered_ms", arguments: [agent]).map {
                Delivery(agent: $0["agent"], source: $0["source"], revision: $0["revision"], digest: $0["digest"],
                         deliveredAt: Date(timeIntervalSince1970: Double($0["delivered_ms"] as Int64) / 1000))
            }
        }
    }

    static func artifact(_ row: Row) -> PackagedArtifact {
        PackagedArtifact(source: row["source"], revision: row["revision"], digest: row["digest"],
                         size: UInt64(row["size"] as Int64), commit: row["commit_"], origin: row["origin"],
                         createdAt: Date(timeIntervalSince1970: Double(row["created_ms"] as Int64) / 1000))
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}
