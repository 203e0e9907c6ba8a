import Foundation

/// How far a governed source's newest revision got (`rollout` table).
public struct RolloutRecord: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable {
        /// Waves are being delivered one after the other.
        case rolling
        /// A wave failed: later waves keep what they had.
        case halted
        /// Every wave is healthy.
        case complete
    }
    public var source: String
    public var digest: String
    public var revision: String
    /// The wave being delivered to (0-based); `waves.count` once complete.
    public var wave: Int
    /// When the current wave became healthy (its soak runs from then); nil: not yet.
    public var waveHealthyAt: Date?
    public var state: State
    public var failedAgent: String
    public var message: String
    /// The last revision that was healthy on every agent ("" before the first).
    public var stableDigest: String
    public var startedAt: Date
    public var updatedAt: Date
}

/// An operator's push of one revision through a freeze for one agent.
public struct RolloutRelease: Sendable, Equatable, Codable {
    public var source: String
    public var agent: String
    public var digest: String
    public var revision: String
    public var by: String
    public var reason: String
    public var at: Date
}

extension Registry {
    public func rollout(source: String) async throws -> RolloutRecord? {
        try await store.read { db in
            try SQLRow.fetchOne(db, sql: "SELECT * FROM rollout WHERE source = ?", arguments: [source]).map { row in
                let healthy: Int64 = row["wave_healthy_ms"]
                return RolloutRecord(
                    source: row["source"], digest: row["digest"], revision: row["revision"], wave: Int(row["wave"] as Int64),
                    waveHealthyAt: healthy == 0 ? nil : Self.date(healthy),
                    state: RolloutRecord.State(rawValue: row["state"]) ?? .rolling, failedAgent: row["failed_agent"],
                    message: row["message"], stableDigest: row["stable_digest"], startedAt: Self.date(row["started_ms"]),
                    updatedAt: Self.date(row["updated_ms"]))
            }
        }
    }

    public func saveRollout(_ record: RolloutRecord) async throws {
        try await store.write { db in
            try db.execute(sql: """
                INSERT INTO rollout(source, digest, revision, wave, wave_healthy_ms, state, failed_agent, message, stable_digest, started_ms, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(source) DO UPDATE SET digest = excluded.digest, revision = excluded.revision, wave = excluded.wave,
                  wave_healthy_ms = excluded.wave_healthy_ms, state = excluded.state, failed_agent = excluded.failed_agent,
                  message = excluded.message, stable_digest = excluded.stable_digest, started_ms = excluded.started_ms,
                  updated_ms = excluded.updated_ms
                """, arguments: [record.source, record.digest, record.revision, Int64(record.wave),
                                 record.waveHealthyAt.map(Self.milliseconds) ?? 0, record.state.rawValue, record.failedAgent,
                                 record.message, record.stableDigest, Self.milliseconds(record.startedAt), Self.milliseconds(record.updatedAt)])
        }
    }

    /// Agents granted `source`, by name.
    public func grantedAgents(source: String) async throws -> [String] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: "SELECT agent FROM grant_ WHERE source = ? ORDER BY agent", arguments: [source]).map { $0["agent"] }
        }
    }

    /// What each agent of a governed source was last given (digest).
    public func rolloutAssignments(source: String) async throws -> [String: String] {
        try await store.read { db in
            var result: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, digest FROM rollout_assignment WHERE source = ?", arguments: [source]) {
                result[row["agent"]] = row["digest"]
            }
            return result
        }
    }

    public func saveRolloutAssignments(source: String, _ changed: [String: String]) async throws {
        guard !changed.isEmpty else { return }
        try await store.write { db in
            for (agent, digest) in changed.sorted(by: { $0.key < $1.key }) {
                try db.execute(sql: """
                    INSERT INTO rollout_assignment(source, agent, digest) VALUES (?, ?, ?)
                    ON CONFLICT(source, agent) DO UPDATE SET digest = excluded.digest
                    """, arguments: [source, agent, digest])
            }
        }
    }

    /// Deliveries of `source` recorded after row `row`, oldest first (at most `limit`).
    public func deliveries(source: String, afterRow row: Int64, limit: Int = 10_000) async throws -> [(row: Int64, agent: String, digest: String, at: Int64)] {
        try await store.read { db in
            try SQLRow.fetchAll(db, sql: """
                SELECT rowid AS row_, agent, digest, delivered_ms FROM delivery WHERE source = ? AND rowid > ? ORDER BY rowid LIMIT ?
                """, arguments: [source, row, limit]).map { ($0["row_"], $0["agent"], $0["digest"], $0["delivered_ms"]) }
        }
    }

    public func recordRelease(_ release: RolloutRelease) async throws {
        try await store.write { db in
            try db.execute(sql: "INSERT INTO rollout_release(source, agent, digest, revision, by_, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           arguments: [release.source, release.agent, release.digest, release.revision, release.by, release.reason,
                                       Self.milliseconds(release.at)])
        }
    }

    /// Releases of `digest` of `source`, per agent (the newest of each).
    public func releases(source: String, digest: String) async throws -> [String: RolloutRelease] {
        try await store.read { db in
            var result: [String: RolloutRelease] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT * FROM rollout_release WHERE source = ? AND digest = ? ORDER BY id",
                                           arguments: [source, digest]) {
                result[row["agent"]] = RolloutRelease(source: row["source"], agent: row["agent"], digest: row["digest"], revision: row["revision"],
                                                      by: row["by_"], reason: row["reason"], at: Self.date(row["at_ms"]))
            }
            return result
        }
    }

    /// The freeze periods last read from a source's GitLab project (JSON), and when.
    public func gitlabFreezes(source: String) async throws -> (json: String, readAt: Date)? {
        try await store.read { db in
            try SQLRow.fetchOne(db, sql: "SELECT periods, read_ms FROM gitlab_freeze WHERE source = ?", arguments: [source]).map {
                ($0["periods"], Self.date($0["read_ms"]))
            }
        }
    }

    public func saveGitLabFreezes(source: String, json: String, readAt: Date) async throws {
        try await store.write { db in
            try db.execute(sql: """
                INSERT INTO gitlab_freeze(source, periods, read_ms) VALUES (?, ?, ?)
                ON CONFLICT(source) DO UPDATE SET periods = excluded.periods, read_ms = excluded.read_ms
                """, arguments: [source, json, Self.milliseconds(readAt)])
        }
    }

    /// A revision of `source` named by its revision string, digest, commit or a commit prefix
    /// of at least 7 hex digits (the newest match among the newest 1,000).
    public func findRevision(_ name: String, source: String) async throws -> PackagedArtifact? {
        let recent = try await revisions(source: source, limit: 1000, before: nil)
        let lower = name.lowercased()
        let hexPrefix = lower.count >= 7 && lower.allSatisfy(\.isHexDigit)
        return recent.first { artifact in
            artifact.revision == name || artifact.digest == lower || artifact.digest == "sha256:\(lower)"
                || (hexPrefix && artifact.commit.lowercased().hasPrefix(lower))
        }
    }

    /// Claims or renews the rollout governor lease for `replica`; whether this replica holds it.
    public func claimRolloutGovernor(replica: String, lease: Duration) async throws -> Bool {
        let now = Self.milliseconds(Date())
        let until = now + lease.components.seconds * 1000
        return try await store.write { db in
            try db.execute(sql: """
                INSERT INTO rollout_governor(id, replica, until_ms) VALUES (1, ?, ?)
                ON CONFLICT(id) DO UPDATE SET replica = excluded.replica, until_ms = excluded.until_ms
                WHERE rollout_governor.replica = excluded.replica OR rollout_governor.until_ms < ?
                """, arguments: [replica, until, now])
            return try String.fetchOne(db, sql: "SELECT replica FROM rollout_governor WHERE id = 1") == replica
        }
    }

    /// The last rollout commit status said per agent of `source`.
    public func rolloutStatuses(source: String) async throws -> [String: String] {
        try await store.read { db in
            var result: [String: String] = [:]
            for row in try SQLRow.fetchAll(db, sql: "SELECT agent, said FROM rollout_status WHERE source = ?", arguments: [source]) {
                result[row["agent"]] = row["said"]
            }
            return result
        }
    }

    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
