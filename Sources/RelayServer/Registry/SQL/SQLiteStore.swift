import Foundation
import GRDB

/// The registry in one SQLite file (WAL): the embedded default for one relay process. Reads
/// run beside the writer on GRDB's reader queues; writes are serialised on its writer queue.
public final class SQLiteStore: SQLStore {
    public let dialect = SQLDialect.sqlite
    public let location: String
    let pool: DatabasePool

    public init(path: URL, migrator: DatabaseMigrator) throws {
        try FileManager.default.createDirectory(at: path.deletingLastPathComponent(), withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        // WAL (a DatabasePool sets it): one fsync per transaction (status batches arrive many
        // times a second), and readers never wait for the writer.
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        location = "\(path.lastPathComponent) in \(path.deletingLastPathComponent().path)"
        pool = try DatabasePool(path: path.path, configuration: configuration)
        try migrator.migrate(pool)
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        try await pool.read { db in try body(GRDBConnection(db)) }
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (any SQLConnection) throws -> T) async throws -> T {
        try await pool.write { db in try body(GRDBConnection(db)) }
    }

    public func close() async {
        try? pool.close()
    }
}

/// A GRDB `Database` as a `SQLConnection`: every statement is prepared once per connection
/// (GRDB's statement cache).
final class GRDBConnection: SQLConnection {
    let db: Database
    let dialect = SQLDialect.sqlite

    init(_ db: Database) { self.db = db }

    func execute(sql: String, arguments: SQLArguments) throws -> Int {
        try db.cachedStatement(sql: sql).execute(arguments: Self.arguments(arguments))
        return db.changesCount
    }

    func forEachRow(sql: String, arguments: SQLArguments, _ body: (SQLRow) throws -> Bool) throws {
        let statement = try db.cachedStatement(sql: sql)
        let columns = SQLColumns(statement.columnNames)
        let cursor = try Row.fetchCursor(statement, arguments: Self.arguments(arguments))
        while let row = try cursor.next() {
            let values = Array(row.databaseValues.map { Self.value($0) })
            guard try body(SQLRow(columns: columns, values: values)) else { return }
        }
    }

    func inSavepoint(_ body: () throws -> Void) throws {
        try db.inSavepoint {
            try body()
            return .commit
        }
    }

    static func arguments(_ arguments: SQLArguments) -> StatementArguments {
        StatementArguments(arguments.values.map { value -> DatabaseValue in
            switch value {
            case .null: .null
            case .integer(let number): number.databaseValue
            case .real(let number): number.databaseValue
            case .text(let text): text.databaseValue
            case .blob(let data): data.databaseValue
            }
        })
    }

    static func value(_ value: DatabaseValue) -> SQLValue {
        switch value.storage {
        case .null: .null
        case .int64(let number): .integer(number)
        case .double(let number): .real(number)
        case .string(let text): .text(text)
        case .blob(let data): .blob(data)
        }
    }
}
