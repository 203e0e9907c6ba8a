import Foundation

/// Which database a statement runs on, for the few places where the two dialects differ
/// (schema, `GREATEST` vs `MAX`, advisory locks).
public enum SQLDialect: String, Sendable {
    case sqlite, postgres
}

/// The registry's view of one database connection inside a read or a write.
///
/// Synchronous by design: a read or write runs its body on the store's own threads (GRDB's
/// queues, or a thread of the PostgreSQL store's pool), never on the cooperative pool, and the
/// same registry code then serves both databases. Statements use `?` placeholders.
public protocol SQLConnection: AnyObject {
    var dialect: SQLDialect { get }
    /// Runs one statement; returns how many rows it changed.
    @discardableResult
    func execute(sql: String, arguments: SQLArguments) throws -> Int
    /// Calls `body` with each result row, in order, until it returns false.
    func forEachRow(sql: String, arguments: SQLArguments, _ body: (SQLRow) throws -> Bool) throws
    /// Runs `body` in a savepoint of the current transaction: undone alone when it throws.
    func inSavepoint(_ body: () throws -> Void) throws
}

extension SQLConnection {
    @discardableResult
    public func execute(sql: String) throws -> Int { try execute(sql: sql, arguments: []) }

    /// Holds PostgreSQL advisory lock `key` until the transaction ends: writes that must not
    /// overlap across replicas take it first. SQLite has one writer: nothing to take.
    public func lockForTransaction(_ key: Int64) throws {
        guard dialect == .postgres else { return }
        try execute(sql: "SELECT pg_advisory_xact_lock(\(key))")
    }

    /// `GREATEST(a, b)` in this dialect (SQLite's two-argument `MAX`).
    public func greatest(_ a: String, _ b: String) -> String {
        dialect == .postgres ? "GREATEST(\(a), \(b))" : "MAX(\(a), \(b))"
    }
}

extension SQLRow {
    public static func fetchAll(_ db: any SQLConnection, sql: String, arguments: SQLArguments = []) throws -> [SQLRow] {
        var rows: [SQLRow] = []
        try db.forEachRow(sql: sql, arguments: arguments) { rows.append($0); return true }
        return rows
    }

    public static func fetchOne(_ db: any SQLConnection, sql: String, arguments: SQLArguments = []) throws -> SQLRow? {
        var first: SQLRow?
        try db.forEachRow(sql: sql, arguments: arguments) { first = $0; return false }
        return first
    }
}

extension SQLDecodable {
    /// The first column of the first row; nil when there is no row or it is NULL.
    public static func fetchOne(_ db: any SQLConnection, sql: String, arguments: SQLArguments = []) throws -> Self? {
        guard let row = try SQLRow.fetchOne(db, sql: sql, arguments: arguments), row.values.first != .null else { return nil }
        return row[0] as Self
    }

    /// The first column of every row (NULLs skipped).
    public static func fetchAll(_ db: any SQLConnection, sql: String, arguments: SQLArguments = []) throws -> [Self] {
        try SQLRow.fetchAll(db, sql: sql, arguments: arguments).compactMap { row in row.values.first == .null ? nil : row[0] as Self }
    }
}

/// Where the registry keeps its records: SQLite in the data directory (one relay) or one
/// PostgreSQL shared by every replica. Reads see one consistent snapshot; a write is one
/// transaction, committed when `write` returns.
public protocol SQLStore: Sendable {
    var dialect: SQLDialect { get }
    /// Names the database for error messages: "relay.sqlite in /data", "PostgreSQL relay@db:5432".
    var location: String { get }
    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T
    func write<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T
    /// Closes connections; later calls fail.
    func close() async
}
