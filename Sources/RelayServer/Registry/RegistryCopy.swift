import Foundation
import GRDB

/// `relay-server db copy`: moves a relay's SQLite registry into an empty PostgreSQL one, to go
/// from one relay to replicas. Everything is copied with its ids (feed positions, outbox
/// order, notifier cursors stay valid, so readers resume where they were), in one PostgreSQL
/// transaction: an interrupted copy leaves the target empty. The SQLite file is only read.
public enum RegistryCopy {
    /// Tables in an order that satisfies their references. `access_version` is not copied:
    /// PostgreSQL's triggers bump its own.
    static let tables = [
        "agent", "grant_", "agent_token", "agent_key", "revision", "delivery", "status_entry", "flux_object",
        "status_journal_mark", "notifier_cursor", "outbox", "notify_state", "status_bundle_import", "bundle_export",
        "rollout", "rollout_assignment", "rollout_release", "rollout_status", "gitlab_deployment", "gitlab_freeze", "access_file",
        "agent_environment",
    ]
    /// Tables whose SQLite `rowid` orders reads (PostgreSQL keeps it in a `rowid` column).
    static let rowidTables: Set<String> = ["agent_token", "delivery", "status_journal_mark"]
    /// Identity columns whose sequences must continue after the copied ids.
    static let identities = [("agent_token", "rowid"), ("delivery", "rowid"), ("status_entry", "id"), ("status_journal_mark", "rowid"),
                             ("outbox", "id"), ("status_bundle_import", "id"), ("rollout_release", "id"), ("gitlab_deployment", "id")]

    public enum Failure: Error, CustomStringConvertible {
        case targetNotEmpty(location: String, table: String, rows: Int)
        case notPostgres
        public var description: String {
            switch self {
            case .targetNotEmpty(let location, let table, let rows):
                "\(location) already holds a registry (\(rows) rows in \(table)): copy only into an empty database, or drop it first"
            case .notPostgres:
                "relay.yaml names no database.postgres to copy into"
            }
        }
    }

    /// Copies `source` (SQLite) into `target` (PostgreSQL). `progress` gets (table, rows copied
    /// so far) every few thousand rows and at the end of each table. Returns rows per table.
    public static func copy(from source: Registry, to target: Registry,
                            progress: @escaping @Sendable (String, Int) -> Void = { _, _ in }) async throws -> [String: Int] {
        guard let sqlite = source.store as? SQLiteStore else { throw Failure.notPostgres }
        guard target.store is PostgresStore else { throw Failure.notPostgres }
        let location = target.location
        return try await target.store.write { db in
            for table in ["agent", "revision", "status_entry", "delivery"] {
                let rows = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table)") ?? 0
                guard rows == 0 else { throw Failure.targetNotEmpty(location: location, table: table, rows: rows) }
            }
            var counts: [String: Int] = [:]
            for table in tables {
                counts[table] = try copyTable(table, from: sqlite.pool, into: db, progress: progress)
            }
            for (table, column) in identities {
                try db.execute(sql: """
                    SELECT setval(pg_get_serial_sequence('\(table)', '\(column)'), GREATEST(COALESCE(MAX(\(column)), 0), 1), MAX(\(column)) IS NOT NULL)
                    FROM \(table)
                    """)
            }
            return counts
        }
    }

    /// Reads the SQLite table in pages by rowid (bounded memory) and inserts each row with the
    /// same columns (and `rowid` where PostgreSQL keeps one).
    private static func copyTable(_ table: String, from pool: DatabasePool, into db: any SQLConnection,
                                  progress: @Sendable (String, Int) -> Void) throws -> Int {
        var after: Int64 = .min
        var copied = 0
        while true {
            let page = try pool.read { sqlite -> [(Int64, [String], [DatabaseValue])] in
                try Row.fetchAll(sqlite, sql: "SELECT rowid AS rowid__, * FROM \(table) WHERE rowid > ? ORDER BY rowid LIMIT 2000",
                                 arguments: [after]).map { row in
                    let columns = Array(row.columnNames.dropFirst())
                    let values = Array(row.databaseValues.dropFirst())
                    return (row["rowid__"], columns, values)
                }
            }
            guard let last = page.last else { break }
            for (rowid, columns, values) in page {
                var names = columns
                var arguments = values.map(GRDBConnection.value)
                if rowidTables.contains(table) {
                    names.append("rowid")
                    arguments.append(.integer(rowid))
                }
                try db.execute(sql: "INSERT INTO \(table)(\(names.joined(separator: ", "))) VALUES (\(names.map { _ in "?" }.joined(separator: ", ")))",
                               arguments: SQLArguments(values: arguments))
            }
            copied += page.count
            after = last.0
            progress(table, copied)
        }
        progress(table, copied)
        return copied
    }
}
