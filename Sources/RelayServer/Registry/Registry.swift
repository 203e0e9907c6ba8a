import Foundation
import ArtifactMirror
import Logging

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
    /// A Helm chart or OCI artifact source's manifest and small blobs (nil for Git sources).
    public var oci: OCIPayload?

    public init(source: String, revision: String, digest: String, size: UInt64, commit: String, origin: String, createdAt: Date,
                oci: OCIPayload? = nil) {
        self.source = source
        self.revision = revision
        self.digest = digest
        self.size = size
        self.commit = commit
        self.origin = origin
        self.createdAt = createdAt
        self.oci = oci
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

/// The relay's durable record: agents and their token hashes, grants, every packaged
/// revision, deliveries, status and notifications. A restart forgets nothing.
///
/// One implementation over two stores (`SQLStore`): SQLite in `<dataDir>/relay.sqlite` for one
/// relay (the default), or one PostgreSQL shared by several relay replicas. The statements are
/// the same on both but for a handful of marked dialect differences, so both stores run the
/// same registry code and the same tests.
public final class Registry: Sendable {
    let store: any SQLStore

    public init(store: any SQLStore) {
        self.store = store
    }

    /// The embedded default: SQLite at `path`, migrated to the current schema.
    public convenience init(path: URL) throws {
        self.init(store: try SQLiteStore(path: path, migrator: Self.sqliteMigrator))
    }

    public var dialect: SQLDialect { store.dialect }

    /// The registry relay.yaml names: PostgreSQL (`database.postgres`, migrated on open) or
    /// SQLite in `<dataDir>/relay.sqlite`.
    public static func open(_ config: ResolvedServerConfig, logger: Logger) async throws -> Registry {
        if let postgres = config.postgres {
            return Registry(store: try await PostgresStore.open(postgres, logger: logger))
        }
        return try Registry(path: config.dataDirectory.appendingPathComponent("relay.sqlite"))
    }

    /// Closes the store's connections (PostgreSQL) or files (SQLite).
    public func close() async { await store.close() }

    /// Where the records are, for messages: "relay.sqlite in /data", "PostgreSQL relay@db:5432/relay".
    public var location: String { store.location }

    /// Makes the config-managed agents, their grants and tokens match relay.yaml (agents no
    /// longer configured are removed with their grants and tokens; their delivery history
    /// stays). Agents created with `relay-server agents` are left alone.
    /// `replica`: this relay process (`ResolvedServerConfig.replica`); the agents it showed
    /// connected before it stopped are not connected any more.
    public func syncAgents(_ agents: [(name: String, tokenSHA256: String, sources: [String])], replica: String = "") async throws {
        // Writes only what differs: a restart with an unchanged relay.yaml writes nothing here
        // but the connected flags. (Rewriting every agent, grant and token, each a statement
        // with its access trigger, took ~4 s of a 10,000-agent relay's start, while the fleet
        // waited to reconnect: Benchmarks/fleet_bench.py phase d, perf.)
        try await store.write { db in
            // Replicas starting together apply relay.yaml's agents one at a time.
            try db.lockForTransaction(PostgresSchema.migrationLock)
            var managedBy: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT name, managed_by FROM agent") { managedBy[row["name"]] = row["managed_by"] as String }
            var tokens: [String: Set<String>] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, token_sha256 FROM agent_token") {
                tokens[row["agent"] as String, default: []].insert(row["token_sha256"])
            }
            var grants: [String: Set<String>] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, source FROM grant_") { grants[row["agent"] as String, default: []].insert(row["source"]) }

            let configured = Set(agents.map(\.name))
            for (name, manager) in managedBy where manager == "config" && !configured.contains(name) {
                try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [name])
                try db.execute(sql: "DELETE FROM agent WHERE name = ?", arguments: [name])
            }
            for agent in agents {
                if managedBy[agent.name] != "config" {
                    try db.execute(sql: """
                        INSERT INTO agent(name, managed_by) VALUES (?, 'config')
                        ON CONFLICT(name) DO UPDATE SET managed_by = 'config'
                        """, arguments: [agent.name])
                }
                if grants[agent.name] ?? [] != Set(agent.sources) {
                    try db.execute(sql: "DELETE FROM grant_ WHERE agent = ?", arguments: [agent.name])
                    for source in Set(agent.sources) {
                        try db.execute(sql: "INSERT INTO grant_(agent, source) VALUES (?, ?)", arguments: [agent.name, source])
                    }
                }
                if tokens[agent.name] ?? [] != [agent.tokenSHA256] {
                    try db.execute(sql: "DELETE FROM agent_token WHERE agent = ?", arguments: [agent.name])
                    try db.execute(sql: "INSERT INTO agent_token(token_sha256, agent, created_ms) VALUES (?, ?, 0)", arguments: [agent.tokenSHA256, agent.name])
                }
            }
            // Nobody is connected to a relay that starts. Other replicas sharing the registry
            // keep their agents' flags: only this replica's are cleared.
            if db.dialect == .sqlite {
                try db.execute(sql: "UPDATE agent SET connected = 0 WHERE connected != 0")
            } else {
                try db.execute(sql: "UPDATE agent SET connected = 0 WHERE connected != 0 AND replica = ?", arguments: [replica])
            }
        }
    }

    /// Records a packaged revision (idempotent).
    /// `packaging`: what shaped the bytes besides the commit (`PackagingFingerprint`).
    public func record(_ artifact: PackagedArtifact, packaging: String = "") async throws {
        try await store.write { db in
            try db.execute(sql: """
                INSERT INTO revision(source, revision, digest, size, commit_, origin, created_ms, packaging, oci) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(source, digest) DO UPDATE SET revision = excluded.revision, created_ms = excluded.created_ms, oci = excluded.oci,
                    commit_ = CASE WHEN excluded.oci = '' THEN revision.commit_ ELSE excluded.commit_ END
                """, arguments: [artifact.source, artifact.revision, artifact.digest, Int64(artifact.size), artifact.commit,
                                 artifact.origin, Self.milliseconds(artifact.createdAt), packaging, Self.ociText(artifact.oci)])
            if db.dialect == .postgres {
                // Other replicas offer it too (RevisionFollower); sent when this commits.
                try db.execute(sql: "SELECT pg_notify(?, ?)", arguments: [ReplicaWakeups.revision, artifact.source])
            }
        }
    }

    /// Runs `body` as the only packager of `source` among the replicas sharing a PostgreSQL
    /// (an advisory lock per source, released when its session ends, also by a crash).
    /// SQLite: one relay, no lock needed.
    public func asOnlyPackager<T: Sendable>(of source: String, _ body: () async throws -> T) async throws -> T {
        guard let postgres = store as? PostgresStore else { return try await body() }
        return try await postgres.withSessionLock(PostgresSchema.packagingLock(source), body)
    }

    /// The digest the first replica recorded for `commit` of `source` with the same
    /// `packaging`, if any: packaging that commit again the same way must give it.
    public func recordedDigest(source: String, commit: String, packaging: String) async throws -> String? {
        try await store.read { db in
            try String.fetchOne(db, sql: """
                SELECT digest FROM revision WHERE source = ? AND commit_ = ? AND packaging = ? ORDER BY created_ms LIMIT 1
                """, arguments: [source, commit, packaging])
        }
    }

    /// The newest recorded artifact of every source, with how it was packaged.
    public func latestRecorded() async throws -> [String: (artifact: PackagedArtifact, packaging: String)] {
        try await store.read { db in
            var result: [String: (artifact: PackagedArtifact, packaging: String)] = [:]
            for row in try SQLRow.fetchAll(db, sql: """
                SELECT r.* FROM revision r
                JOIN (SELECT source, MAX(created_ms) AS newest FROM revision GROUP BY source) n
                  ON r.source = n.source AND r.created_ms = n.newest
                """) {
                let artifact = Self.artifact(row)
                result[artifact.source] = (artifact, row["packaging"])
            }
            return result
        }
    }

    /// The newest packaged artifact of every source.
    public func latestArtifacts() async throws -> [String: PackagedArtifact] {
        try await latestRecorded().mapValues(\.artifact)
    }

    /// Every revision ever packaged for a source, newest first.
    public func revisions(source: String) async throws -> [PackagedArtifact] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: "SELECT * FROM revision WHERE source = ? ORDER BY created_ms DESC", arguments: [source])
                .map(Self.artifact)
        }
    }

    /// Whether any revision with this digest is recorded for one of `sources` (the newest).
    public func digestBelongs(_ digest: String, toAnyOf sources: [String]) async throws -> PackagedArtifact? {
        try await store.read { db in try Self.newestRevision(db, digest: digest, sources: sources) }
    }

    /// `digestBelongs`, read off the cooperative pool (the tunnel's calls).
    public func artifact(digest: String, amongSources sources: [String]) async throws -> PackagedArtifact? {
        try await store.read { db in try Self.newestRevision(db, digest: digest, sources: sources) }
    }

    private static func newestRevision(_ db: any SQLConnection, digest: String, sources: [String]) throws -> PackagedArtifact? {
        guard !sources.isEmpty else { return nil }
        return try SQLRow.fetchOne(db, sql: """
            SELECT * FROM revision WHERE digest = ? AND source IN (\(sources.map { _ in "?" }.joined(separator: ",")))
            ORDER BY created_ms DESC LIMIT 1
            """, arguments: SQLArguments([digest] + sources)).map(artifact)
    }

    public func recordDelivery(agent: String, source: String, revision: String, digest: String) async throws {
        try await store.write { db in
            try Self.insertDelivery(db, agent: agent, source: source, revision: revision, digest: digest, at: Self.milliseconds(Date()))
        }
    }

    public func deliveries(agent: String) async throws -> [Delivery] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: "SELECT * FROM delivery WHERE agent = ? ORDER BY delivered_ms", arguments: [agent]).map {
                Delivery(agent: $0["agent"], source: $0["source"], revision: $0["revision"], digest: $0["digest"],
                         deliveredAt: Date(timeIntervalSince1970: Double($0["delivered_ms"] as Int64) / 1000))
            }
        }
    }

    /// Records a delivery once (a second Ack or Hello of the same artifact changes nothing).
    static func insertDelivery(_ db: any SQLConnection, agent: String, source: String, revision: String, digest: String, at: Int64) throws {
        try lockFeed(db)
        try db.execute(sql: """
            INSERT INTO delivery(agent, source, revision, digest, delivered_ms) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(agent, digest) DO NOTHING
            """, arguments: [agent, source, revision, digest, at])
    }

    static func artifact(_ row: SQLRow) -> PackagedArtifact {
        PackagedArtifact(source: row["source"], revision: row["revision"], digest: row["digest"],
                         size: UInt64(row["size"] as Int64), commit: row["commit_"], origin: row["origin"],
                         createdAt: Date(timeIntervalSince1970: Double(row["created_ms"] as Int64) / 1000),
                         oci: ociPayload(row["oci"]))
    }

    /// The `oci` column: JSON of the payload, "" for a Git source.
    static func ociText(_ payload: OCIPayload?) -> String {
        guard let payload, let data = try? JSONEncoder().encode(payload) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    static func ociPayload(_ text: String) -> OCIPayload? {
        text.isEmpty ? nil : try? JSONDecoder().decode(OCIPayload.self, from: Data(text.utf8))
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}
