import GRDB

/// The registry's SQLite schema, as versioned GRDB migrations (run at start-up, in order; a
/// migration never changes once released). PostgreSQL's is in `PostgresSchema`.
extension Registry {
    static var sqliteMigrator: DatabaseMigrator {
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
        migrator.registerMigration("v11-outbox-claims") { db in
            // A notification is claimed before it is sent (replicas on PostgreSQL share the
            // outbox; the same code runs here).
            try db.execute(sql: """
                ALTER TABLE outbox ADD COLUMN claimed_until_ms INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
                """)
        }
        migrator.registerMigration("v12-agent-replica") { db in
            // The relay process (replica) an agent's latest session is on.
            try db.execute(sql: "ALTER TABLE agent ADD COLUMN replica TEXT")
        }
        migrator.registerMigration("v13-revision-packaging") { db in
            // What shaped an artifact besides its commit (PackagingFingerprint).
            try db.execute(sql: "ALTER TABLE revision ADD COLUMN packaging TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v14-revision-oci") { db in
            // A Helm chart or OCI artifact's manifest and small blobs (JSON of OCIPayload).
            try db.execute(sql: "ALTER TABLE revision ADD COLUMN oci TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v15-rollouts") { db in
            try db.execute(sql: RolloutSchema.sql(dialect: .sqlite))
        }
        return migrator
    }
    static func registerTokenMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v4-agent-tokens") { db in
            try db.execute(sql: """
                ALTER TABLE agent ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'config';
                -- Every valid token of every agent (SHA-256 only); two during a rotation.
                CREATE TABLE agent_token (
                    token_sha256 TEXT PRIMARY KEY,
                    agent TEXT NOT NULL REFERENCES agent(name) ON DELETE CASCADE,
                    created_ms INTEGER NOT NULL
                );
                INSERT INTO agent_token(token_sha256, agent, created_ms) SELECT token_sha256, name, 0 FROM agent;
                """)
        }
        migrator.registerMigration("v5-tokens-only-in-agent_token") { db in
            // agent.token_sha256 became a copy of agent_token: drop it (SQLite ≥ 3.35).
            try db.execute(sql: "ALTER TABLE agent DROP COLUMN token_sha256")
        }
    }
    static func registerAgentKeyMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v6-agent-keys") { db in
            try db.execute(sql: """
                -- Public keys that sign an agent's status bundles (relay-server agents trust).
                CREATE TABLE agent_key (
                    agent TEXT NOT NULL REFERENCES agent(name) ON DELETE CASCADE,
                    key_id TEXT NOT NULL,
                    der BLOB NOT NULL,
                    created_ms INTEGER NOT NULL,
                    PRIMARY KEY (agent, key_id)
                );
                -- Every status bundle imported (relay-server bundle import).
                CREATE TABLE status_bundle_import (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    agent TEXT NOT NULL,
                    journal TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    statement_sha256 TEXT NOT NULL,
                    imported_ms INTEGER NOT NULL,
                    created_ms INTEGER NOT NULL,
                    entries INTEGER NOT NULL,
                    stored INTEGER NOT NULL,
                    up_to INTEGER NOT NULL,
                    newest_observed_ms INTEGER,
                    last_bundle_sequence INTEGER NOT NULL,
                    inventory TEXT NOT NULL
                );
                CREATE INDEX status_bundle_import_by_agent ON status_bundle_import(agent, id);
                CREATE INDEX status_bundle_import_by_statement ON status_bundle_import(statement_sha256);
                """)
        }
    }
    static func registerBundleExportMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v7-bundle-exports") { db in
            try db.execute(sql: """
                -- Relay bundles exported per agent. A sequence is reserved (completed = 0) before the
                -- bundle is written, so two exports never share one; a failed export leaves a gap.
                CREATE TABLE bundle_export (
                    agent TEXT NOT NULL,
                    sequence INTEGER NOT NULL,
                    created_ms INTEGER NOT NULL,
                    expires_ms INTEGER,
                    kind TEXT NOT NULL,
                    bytes INTEGER NOT NULL DEFAULT 0,
                    parts INTEGER NOT NULL DEFAULT 1,
                    completed INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (agent, sequence)
                );
                """)
        }
        migrator.registerMigration("v8-status-journal-marks") { db in
            try db.execute(sql: """
                -- The highest sequence received per agent journal (tunnel or status bundle). Status
                -- retention never deletes it: acknowledgements survive it, and entries at or below
                -- it are not stored again (a status bundle re-imported after retention).
                CREATE TABLE status_journal_mark (
                    agent TEXT NOT NULL,
                    journal TEXT NOT NULL,
                    up_to INTEGER NOT NULL,
                    updated_ms INTEGER NOT NULL,
                    PRIMARY KEY (agent, journal)
                );
                INSERT INTO status_journal_mark(agent, journal, up_to, updated_ms)
                  SELECT agent, journal, MAX(sequence), MAX(received_ms) FROM status_entry GROUP BY agent, journal;
                """)
        }
    }
    static func registerAccessMigration(_ migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v9-access-version") { db in
            try db.execute(sql: """
                CREATE TABLE access_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
                INSERT INTO access_version(id, version) VALUES (1, 1);
                """)
            for table in ["agent", "agent_token", "grant_"] {
                for event in ["INSERT", "UPDATE", "DELETE"] {
                    // `agent` rows change on every connect (connected, last_seen_ms): only the
                    // columns that decide access count there.
                    let when = table == "agent" && event == "UPDATE" ? "UPDATE OF name, managed_by" : event
                    try db.execute(sql: """
                        CREATE TRIGGER access_\(table)_\(event.lowercased()) AFTER \(when) ON \(table)
                        BEGIN UPDATE access_version SET version = version + 1 WHERE id = 1; END
                        """)
                }
            }
        }
    }
}
